//! The YAML configuration: parsed into typed structs (unknown keys rejected), then checked
//! once at start-up. Every error names the file, the line and the key.
//!
//! Paths may use `~` and `${VAR}` / `${VAR:-default}`; relative paths are relative to the
//! config file's folder.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use lore_core::Sampling;
pub use lore_engine::settings::{EmbedderConfig, GeneratorConfig};
use lore_plugins::{RerankerConfig, RetrieverConfig};
use serde::Deserialize;

/// The configuration as written, after path expansion.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// LoRA adapters a command loads besides the bots' (`lore eval --adapter`).
    #[serde(skip)]
    pub command_adapters: Vec<PathBuf>,
    /// Where the LanceDB knowledge bases are: a folder (which also holds conversation
    /// memory unless `state_dir` says otherwise), or object storage, `s3://bucket/prefix`,
    /// which several daemons can serve from while one place ingests (see `storage`).
    #[serde(default = "default_data_dir")]
    pub data_dir: DataDir,
    /// This daemon's own state (conversation memory, under `conversations/`), never shared.
    /// Default: `data_dir` when it is a folder; with object storage
    /// `${XDG_STATE_HOME:-~/.local/state}/lore`.
    #[serde(default)]
    pub state_dir: PathBuf,
    /// How to reach object storage when `data_dir` is `s3://…`. Credentials are not written
    /// here: they come from the environment as for any AWS tool (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, or `AWS_PROFILE`).
    #[serde(default)]
    pub storage: Option<StorageConfig>,
    /// The GGUF models: generator, embedder, and optionally a reranker.
    pub models: Models,
    /// Retrieval defaults for every bot and channel.
    #[serde(default)]
    pub retrieval: Retrieval,
    /// Defaults for knowledge bases created from the command line.
    #[serde(default)]
    pub chunking: Chunking,
    /// What reading one document may take: PDF, HTML, DOCX and ODT files and web pages are
    /// parsed in a child process under these limits (`memory_mib`, `cpu_secs`,
    /// `timeout_secs`; see `ParsingLimits`), so a hostile one is skipped instead
    /// of taking Lore down.
    #[serde(default)]
    pub parsing: ParsingLimits,
    /// Knowledge bases by name.
    #[serde(default)]
    pub knowledge_bases: BTreeMap<String, KnowledgeBaseConfig>,
    /// Bots by name.
    #[serde(default)]
    pub bots: BTreeMap<String, BotConfig>,
    /// Days a conversation's memory is kept after its last message.
    #[serde(default = "default_memory_days")]
    pub memory_days: u64,
    /// On SIGTERM or Ctrl-C, how long answers in progress may take to finish before their
    /// askers are told to ask again.
    #[serde(default = "default_shutdown_grace_seconds")]
    pub shutdown_grace_seconds: u64,
    /// How questions from many people at once are let in (every bot shares one line).
    #[serde(default)]
    pub admission: Admission,
    /// The HTTP server (OpenAI-compatible API, chat page, health, metrics); off unless set.
    #[serde(default)]
    pub server: Option<ServerConfig>,
    /// The file this was read from (set by the loader).
    #[serde(skip)]
    pub file: PathBuf,
    #[serde(skip)]
    source_text: String,
}

fn default_data_dir() -> DataDir {
    DataDir::Folder(PathBuf::from("${LORE_DATA:-~/.local/share/lore}"))
}

fn default_object_store_state_dir() -> PathBuf {
    PathBuf::from("${XDG_STATE_HOME:-~/.local/state}/lore")
}

/// Where the knowledge bases are stored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "PathBuf")]
pub enum DataDir {
    /// A local folder. As parsed it holds the text as written, which [`Config::parse`]
    /// expands and, when it names a URI, turns into [`DataDir::ObjectStore`].
    Folder(PathBuf),
    /// `s3://bucket/prefix` (the prefix may be empty).
    ObjectStore(String),
}

impl From<PathBuf> for DataDir {
    fn from(path: PathBuf) -> Self {
        DataDir::Folder(path)
    }
}

impl DataDir {
    /// The folder, unless the knowledge bases are in object storage.
    pub fn folder(&self) -> Option<&Path> {
        match self {
            DataDir::Folder(dir) => Some(dir),
            DataDir::ObjectStore(_) => None,
        }
    }
}

impl fmt::Display for DataDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataDir::Folder(dir) => write!(f, "{}", dir.display()),
            DataDir::ObjectStore(uri) => f.write_str(uri),
        }
    }
}

/// The `storage:` section: the object store behind an `s3://` `data_dir`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// An S3-compatible server's URL (MinIO, Cloudflare R2, Ceph, moto); default: AWS S3
    /// (or `AWS_ENDPOINT_URL`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The bucket's region; default: `AWS_REGION`, else what AWS reports for the bucket
    /// (`us-east-1` with another endpoint).
    #[serde(default)]
    pub region: Option<String>,
    /// Allows an `http://` endpoint (unencrypted: a server on this machine or a trusted
    /// network).
    #[serde(default)]
    pub allow_http: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Models {
    /// The model that writes answers (and scores passages for the `llm` reranker): a GGUF
    /// file run here, or (`type: openai`) a pool of OpenAI-compatible servers.
    pub generator: GeneratorSettings,
    /// The model that turns chunks and questions into vectors for retrieval: a GGUF file
    /// run here, or (`type: openai`) a pool of servers.
    pub embedder: EmbedderSettings,
    /// A cross-encoder GGUF (rank pooling) for the `cross-encoder` reranker; same keys as
    /// the embedder.
    #[serde(default)]
    pub reranker: Option<EmbedderConfig>,
}

/// Where a model runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// A GGUF file run in this process by llama.cpp.
    #[default]
    Llama,
    /// OpenAI-compatible servers (vLLM, TGI, llama.cpp's server, Ollama, another Lore).
    Openai,
}

/// `models.generator`: the keys of a local GGUF model (`lore_engine::GeneratorConfig`), and
/// with `type: openai` those of a pool of servers instead of `path`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorSettings {
    #[serde(rename = "type", default)]
    pub kind: ModelKind,
    /// A GGUF file (`type: llama`).
    #[serde(default)]
    pub path: PathBuf,
    #[serde(default)]
    pub gpu_layers: u32,
    /// Tokens one conversation may use, prompt and answer together (for a pool: the
    /// servers' context window, which they do not report in a standard way).
    #[serde(default = "lore_engine::settings::default_context_tokens")]
    pub context_tokens: usize,
    /// Conversations answered together.
    #[serde(default = "lore_engine::settings::default_parallel")]
    pub parallel: usize,
    #[serde(default = "lore_engine::settings::default_max_queue")]
    pub max_queue: usize,
    #[serde(default = "lore_engine::settings::default_batch_tokens")]
    pub batch_tokens: usize,
    #[serde(default)]
    pub threads: Option<usize>,
    #[serde(default = "lore_engine::settings::default_max_answer_tokens")]
    pub max_answer_tokens: usize,
    #[serde(default)]
    pub sampling: Sampling,
    /// `type: openai`: base URLs ending in `/v1`, one per server.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// `type: openai`: the model name the servers know.
    #[serde(default)]
    pub model: Option<String>,
    /// `type: openai`: environment variable holding the servers' API key, if they want one.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// `type: openai`: requests one server takes at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// `type: openai`: the longest one answer may take, failovers and its whole stream
    /// included; past it the answer fails in words and its place on the server is freed.
    #[serde(default = "default_request_deadline_secs")]
    pub request_deadline_secs: u64,
    /// `type: openai`: `chat` (the servers apply the model's chat template: instruct
    /// models) or `completions` (Lore's prompt template, sent as plain text: base models
    /// such as GPT-J).
    #[serde(default)]
    pub api: RemoteApi,
    /// `type: openai`: the model's `tokenizer.json`, for exact prompt token counts without
    /// asking the servers (else their `/tokenize`, else an estimate).
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
}

/// `models.embedder`: the keys of a local GGUF model (`lore_engine::EmbedderConfig`), or
/// with `type: openai` those of a pool of servers instead of `path`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedderSettings {
    #[serde(rename = "type", default)]
    pub kind: ModelKind,
    /// A GGUF embedding model (`type: llama`).
    #[serde(default)]
    pub path: PathBuf,
    #[serde(default)]
    pub gpu_layers: u32,
    #[serde(default)]
    pub threads: Option<usize>,
    /// Most tokens per text (chunks are cut to fit); for a local model also per decode.
    #[serde(default = "default_embed_tokens")]
    pub batch_tokens: usize,
    /// `type: openai`: base URLs ending in `/v1`, one per server.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// `type: openai`: the model name the servers know.
    #[serde(default)]
    pub model: Option<String>,
    /// `type: openai`: environment variable holding the servers' API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// `type: openai`: requests one server takes at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// `type: openai`: the longest one request (a batch of texts) may take, failovers
    /// included.
    #[serde(default = "default_request_deadline_secs")]
    pub request_deadline_secs: u64,
    /// `type: openai`: texts sent in one request.
    #[serde(default = "default_batch_texts")]
    pub batch_texts: usize,
    /// `type: openai`: the model's `tokenizer.json`, for exact chunk sizes (else
    /// estimated at three bytes a token, which makes chunks smaller than they could be).
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
}

fn default_embed_tokens() -> usize {
    EmbedderConfig::new(PathBuf::new()).batch_tokens
}

fn default_batch_texts() -> usize {
    64
}

impl EmbedderSettings {
    /// The engine's settings for a local model.
    pub fn local(&self) -> EmbedderConfig {
        EmbedderConfig {
            path: self.path.clone(),
            gpu_layers: self.gpu_layers,
            threads: self.threads,
            batch_tokens: self.batch_tokens,
        }
    }

    /// The model's name as clients of Lore's HTTP API see it.
    pub fn name(&self) -> String {
        match (self.kind, &self.model) {
            (ModelKind::Openai, Some(model)) => model.clone(),
            _ => file_model_name(&self.path),
        }
    }
}

/// The keys that say where a model runs, for checking them alike for each model.
struct Placement<'a> {
    /// `models.generator` or `models.embedder`.
    section: &'static str,
    kind: ModelKind,
    path: &'a Path,
    endpoints: &'a [String],
    model: Option<&'a str>,
    api_key_env: Option<&'a str>,
    max_in_flight: usize,
    request_deadline_secs: u64,
    tokenizer: Option<&'a Path>,
}

impl GeneratorSettings {
    fn placement(&self) -> Placement<'_> {
        Placement {
            section: "models.generator",
            kind: self.kind,
            path: &self.path,
            endpoints: &self.endpoints,
            model: self.model.as_deref(),
            api_key_env: self.api_key_env.as_deref(),
            max_in_flight: self.max_in_flight,
            request_deadline_secs: self.request_deadline_secs,
            tokenizer: self.tokenizer.as_deref(),
        }
    }
}

impl EmbedderSettings {
    fn placement(&self) -> Placement<'_> {
        Placement {
            section: "models.embedder",
            kind: self.kind,
            path: &self.path,
            endpoints: &self.endpoints,
            model: self.model.as_deref(),
            api_key_env: self.api_key_env.as_deref(),
            max_in_flight: self.max_in_flight,
            request_deadline_secs: self.request_deadline_secs,
            tokenizer: self.tokenizer.as_deref(),
        }
    }
}

/// Which OpenAI endpoint a pool of servers is asked through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemoteApi {
    #[default]
    Chat,
    Completions,
}

fn default_max_in_flight() -> usize {
    8
}

fn default_request_deadline_secs() -> u64 {
    300
}

impl GeneratorSettings {
    /// The engine's settings for a local model.
    pub fn local(&self) -> GeneratorConfig {
        GeneratorConfig {
            path: self.path.clone(),
            gpu_layers: self.gpu_layers,
            context_tokens: self.context_tokens,
            parallel: self.parallel,
            max_queue: self.max_queue,
            batch_tokens: self.batch_tokens,
            threads: self.threads,
            max_answer_tokens: self.max_answer_tokens,
            sampling: self.sampling.clone(),
        }
    }

    /// The model's name as clients of Lore's HTTP API see it.
    pub fn name(&self) -> String {
        match (self.kind, &self.model) {
            (ModelKind::Openai, Some(model)) => model.clone(),
            _ => file_model_name(&self.path),
        }
    }
}

/// A model file's name as clients of Lore's HTTP API see it: without `.gguf`.
pub fn file_model_name(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into())
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retrieval {
    /// How candidates are found: `vector`, `fulltext` or `hybrid`.
    #[serde(default)]
    pub retriever: RetrieverConfig,
    /// Applied in order after retrieval.
    #[serde(default = "default_rerankers")]
    pub rerankers: Vec<RerankerConfig>,
    /// Candidates fetched from the knowledge base.
    #[serde(default = "default_top_k_chunks")]
    pub top_k: usize,
    /// Passages put in front of the question (at most; fewer if the context is short).
    #[serde(default = "default_passages")]
    pub passages: usize,
    /// If no retrieved passage's cosine similarity to the question reaches this, answer
    /// `abstain_text` without calling the generator. Every retriever measures the same
    /// cosine similarity (the full-text one embeds the question for it), so the threshold
    /// means the same whichever is chosen. A floor under `abstain.calibration` too.
    #[serde(default = "default_min_score")]
    pub min_score: f32,
    /// When to withhold an answer, judged by a calibration fitted on labelled questions
    /// (`lore calibrate`) instead of `min_score` alone.
    #[serde(default)]
    pub abstain: Abstain,
    /// What the bot says when it abstains.
    #[serde(default = "default_abstain_text")]
    pub abstain_text: String,
    /// Said after `abstain_text`, pointing to the nearest thing the knowledge base covers
    /// so the person can rephrase: `{topic}` is the closest passage's section (else its
    /// first words), `{source}` its source. Empty: no hint.
    #[serde(default = "default_abstain_hint")]
    pub abstain_hint: String,
    /// Quote under each answer the one sentence of its passages that best supports it.
    #[serde(default)]
    pub quote_evidence: bool,
    /// `generate` (the model answers), `quote` (the sentence of the passages that best
    /// answers the question is the answer; no generation) or `verified` (the model
    /// answers, and the answer is shown only when a sentence of the passages, quoted
    /// under it, holds what it says; else `abstain.instead`).
    #[serde(default)]
    pub answer_style: AnswerStyle,
}

/// `retrieval.abstain`: the calibrated "I don't know".
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Abstain {
    /// A calibration file written by `lore calibrate` (relative to this file). Each answer
    /// then gets a probability of being right, from retrieval, reranking, how well the
    /// passages support the answer and how much they made it likelier; below the
    /// calibration's threshold it is withheld. Not set: `min_score` alone decides.
    #[serde(default)]
    pub calibration: Option<PathBuf>,
    /// A probability to hold answers to instead of the calibration's own threshold
    /// (higher: fewer answers, more of them right).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// What is said in place of a withheld answer: `abstain` (`abstain_text` and the hint)
    /// or `quote` (the sentence of the passages that best answers the question, marked
    /// as a quote, when one verifies; else `abstain`).
    #[serde(default)]
    pub instead: Instead,
    /// End each judged chat answer with how sure it is: "(confidence: high)".
    #[serde(default)]
    pub show_confidence: bool,
}

/// Expands the calibration path of a bot's or channel's `abstain`, if it names one.
fn expand_calibration(
    abstain: &mut Option<Abstain>,
    expand: &dyn Fn(&Path) -> Result<PathBuf, ConfigError>,
) -> Result<(), ConfigError> {
    if let Some(file) = abstain.as_mut().and_then(|a| a.calibration.as_mut()) {
        *file = expand(file)?;
    }
    Ok(())
}

/// What stands in for a withheld answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Instead {
    #[default]
    Abstain,
    Quote,
}

/// How an answer is made from the passages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AnswerStyle {
    #[default]
    Generate,
    Quote,
    Verified,
}

impl Default for Retrieval {
    fn default() -> Self {
        Self {
            retriever: RetrieverConfig::default(),
            rerankers: default_rerankers(),
            top_k: default_top_k_chunks(),
            passages: default_passages(),
            min_score: default_min_score(),
            abstain: Abstain::default(),
            abstain_text: default_abstain_text(),
            abstain_hint: default_abstain_hint(),
            quote_evidence: false,
            answer_style: AnswerStyle::default(),
        }
    }
}

/// Retrieval settings a bot or channel may override; unset keys inherit.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalOverride {
    /// Replaces `retrieval.retriever`.
    pub retriever: Option<RetrieverConfig>,
    /// Replaces the whole `retrieval.rerankers` chain (`[]` = none).
    pub rerankers: Option<Vec<RerankerConfig>>,
    /// Replaces `retrieval.top_k`.
    pub top_k: Option<usize>,
    /// Replaces `retrieval.passages`.
    pub passages: Option<usize>,
    /// Replaces `retrieval.min_score`.
    pub min_score: Option<f32>,
    /// Replaces `retrieval.abstain` as a whole.
    pub abstain: Option<Abstain>,
    /// Replaces `retrieval.abstain_text`.
    pub abstain_text: Option<String>,
    /// Replaces `retrieval.abstain_hint`.
    pub abstain_hint: Option<String>,
    /// Replaces `retrieval.quote_evidence`.
    pub quote_evidence: Option<bool>,
    /// Replaces `retrieval.answer_style`.
    pub answer_style: Option<AnswerStyle>,
}

impl Retrieval {
    pub fn with(&self, o: &RetrievalOverride) -> Retrieval {
        Retrieval {
            retriever: o.retriever.clone().unwrap_or_else(|| self.retriever.clone()),
            rerankers: o.rerankers.clone().unwrap_or_else(|| self.rerankers.clone()),
            top_k: o.top_k.unwrap_or(self.top_k),
            passages: o.passages.unwrap_or(self.passages),
            min_score: o.min_score.unwrap_or(self.min_score),
            abstain: o.abstain.clone().unwrap_or_else(|| self.abstain.clone()),
            abstain_text: o.abstain_text.clone().unwrap_or_else(|| self.abstain_text.clone()),
            abstain_hint: o.abstain_hint.clone().unwrap_or_else(|| self.abstain_hint.clone()),
            quote_evidence: o.quote_evidence.unwrap_or(self.quote_evidence),
            answer_style: o.answer_style.unwrap_or(self.answer_style),
        }
    }
}

/// The `server:` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on.
    #[serde(default = "default_listen")]
    pub listen: std::net::SocketAddr,
    /// Keys that may use the API. With none, the server listens on loopback only.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    /// Largest request body, in bytes. It also bounds the text of one embeddings or
    /// tokenize request.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Connections open at once, from everyone; one more is answered `503` with
    /// `Retry-After` and closed, never queued. Each is a file descriptor: keep it well
    /// under the process's open-files limit (`LimitNOFILE` in `config/lore.service`).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections open at once from one client address (0: no such cap). Behind a
    /// reverse proxy every client has the proxy's address: raise it to about
    /// `max_connections`, or set 0, there.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Seconds a client has to send a request's headers, counted from when it connects
    /// or from its previous response on a kept-alive connection: idle and slow-header
    /// connections are closed after this.
    #[serde(default = "default_header_read_timeout_secs")]
    pub header_read_timeout_secs: u64,
    /// Seconds a request in progress may stall on its client (no byte of its body
    /// arriving, or its response not being read) before the connection is closed. An
    /// answer waiting in line or being generated is not a stall: the client waits for us.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Names (`lore.example.com`, or with a port, `lore.example.com:8443`) besides the
    /// listen address and `localhost` that requests may address this server by, in their
    /// `Host` header and, from browsers, `Origin`. Without api_keys this is always checked
    /// (a web page whose name was pointed at 127.0.0.1, DNS rebinding, is refused); with
    /// keys only when set.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Texts one `/v1/embeddings` request may hold; more are refused with `400`.
    #[serde(default = "default_max_embedding_inputs")]
    pub max_embedding_inputs: usize,
}

/// One API key: its value is read from an environment variable, never from this file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Environment variable that holds the key.
    pub key_env: String,
    /// Bots (models) this key may use; empty: every bot, and the generator itself.
    #[serde(default)]
    pub bots: Vec<String>,
}

fn default_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_max_body_bytes() -> usize {
    1 << 20
}

fn default_max_connections() -> usize {
    512
}

fn default_max_connections_per_ip() -> usize {
    64
}

fn default_header_read_timeout_secs() -> u64 {
    10
}

fn default_idle_timeout_secs() -> u64 {
    60
}

fn default_max_embedding_inputs() -> usize {
    256
}

/// Admission by question: one place in line per question, answered `parallel`
/// (`models.generator.parallel`) at a time, people taking turns.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admission {
    /// Questions that may wait for their turn; beyond this a question is refused with a
    /// short notice.
    #[serde(default = "default_max_waiting_questions")]
    pub max_waiting_questions: usize,
    /// Questions to bots one person (a chat user, or an API key) may have waiting at once;
    /// one more is refused politely ("you already have 3 questions waiting"), so nobody can
    /// fill the line and lock everyone else out. Requests for the generator itself (another
    /// Lore using this one as its engine) are not capped so.
    #[serde(default = "default_max_waiting_per_person")]
    pub max_waiting_per_person: usize,
    /// Answers in progress per person; their further questions wait behind other
    /// people's.
    #[serde(default = "default_per_user_in_flight")]
    pub per_user_in_flight: usize,
    /// At most this many questions per person in a time window; more get a polite notice.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Whether questions that had to wait still get the `llm` reranker (it costs one
    /// prompt-sized pass per candidate). Off: when others are waiting, it is skipped so
    /// the line moves faster.
    #[serde(default)]
    pub rerank_when_busy: bool,
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            max_waiting_questions: default_max_waiting_questions(),
            max_waiting_per_person: default_max_waiting_per_person(),
            per_user_in_flight: default_per_user_in_flight(),
            rate_limit: None,
            rerank_when_busy: false,
        }
    }
}

/// `questions` per `per_seconds`, per person.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Questions allowed in the window.
    pub questions: usize,
    /// The window, in seconds.
    pub per_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunking {
    /// Largest chunk, in embedder tokens.
    #[serde(default = "default_chunk_tokens")]
    pub max_tokens: usize,
    /// Tokens repeated from the end of one chunk at the start of the next.
    #[serde(default = "default_overlap_tokens")]
    pub overlap_tokens: usize,
    /// `paragraph`: chunks of whole paragraphs where they fit; `sentence`: one sentence each.
    #[serde(default)]
    pub unit: ChunkUnit,
}

impl Default for Chunking {
    fn default() -> Self {
        Self {
            max_tokens: default_chunk_tokens(),
            overlap_tokens: default_overlap_tokens(),
            unit: ChunkUnit::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChunkUnit {
    #[default]
    Paragraph,
    Sentence,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeBaseConfig {
    /// Files and folders ingested by `lore ingest --kb NAME` (folders: every supported
    /// file below). An `http://` or `https://` address is a web page: it moves to
    /// [`Self::web_sources`] when the config is read.
    #[serde(default)]
    pub sources: Vec<PathBuf>,
    /// The web pages among the `sources`, as written.
    #[serde(skip)]
    pub web_sources: Vec<String>,
    /// With web sources: also fetch the pages below each on its host (its sitemap's, else
    /// those its links lead to).
    #[serde(default)]
    pub crawl: bool,
    /// Pages fetched at most per web source when crawling.
    #[serde(default = "default_max_pages")]
    pub max_pages: usize,
    /// Milliseconds between two requests to a host (its robots.txt may ask for more).
    #[serde(default = "default_crawl_delay_ms")]
    pub crawl_delay_ms: u64,
    /// With web sources: let the crawler connect to loopback, private, link-local and other
    /// non-public addresses (an intranet site). Off, a page, redirect or sitemap leading
    /// there is refused, whatever name it goes by.
    #[serde(default)]
    pub allow_private_addresses: bool,
    /// How its files are cut into chunks; default: the top-level `chunking`.
    pub chunking: Option<Chunking>,
    /// Files larger than this are skipped with a warning naming the file and its size
    /// (default 20 MiB).
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// `lore run` watches the `sources` and re-ingests them when files change (debounced,
    /// one ingest at a time), so bots answer from what was just saved.
    #[serde(default)]
    pub watch: bool,
    /// Questions the generator writes for each chunk at ingest, stored as extra search
    /// keys that lead to the chunk (doc2query); 0 (the default) writes none, and drops
    /// those written before. Costs a few generations per chunk at ingest, nothing per
    /// question asked.
    #[serde(default)]
    pub generated_questions: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotConfig {
    /// Where the bot talks: `type: console`, `discord` or `telegram`.
    #[serde(default)]
    pub adapter: AdapterConfig,
    /// The knowledge base it answers from, unless a channel says otherwise.
    pub knowledge_base: String,
    /// A prompt template: a name in `prompts/` (`default`, `plain`) or a file path.
    #[serde(default)]
    pub prompt: Option<String>,
    /// System message for chat models.
    #[serde(default)]
    pub system: Option<String>,
    /// Retrieval settings for this bot, over the top-level `retrieval`.
    #[serde(default)]
    pub retrieval: RetrievalOverride,
    /// Per-channel settings, by Discord channel/thread id or Telegram chat id.
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelConfig>,
    /// Who may ask (empty lists = everyone).
    #[serde(default)]
    pub allow: Allow,
    /// User ids who may run `/kb`, and `/reset` in groups and channels (anyone may reset
    /// their own private chat).
    #[serde(default)]
    pub admins: Vec<String>,
    /// Recent turns kept per conversation.
    #[serde(default = "default_memory_turns")]
    pub memory_turns: usize,
    /// LoRA adapters for this bot's answers (`[{path: x.gguf, scale: 1.0}]`): GGUF files
    /// made for the generator's base model, loaded once with it and applied to this bot's
    /// conversations only. At most one per bot (llama-cpp-2 sets one adapter at a time).
    #[serde(default)]
    pub adapters: Vec<lore_core::LoraAdapter>,
}

impl BotConfig {
    /// A console bot on `kb` with default settings.
    pub fn console(kb: &str) -> Self {
        Self {
            adapter: AdapterConfig::Console,
            knowledge_base: kb.to_string(),
            prompt: None,
            system: None,
            retrieval: RetrievalOverride::default(),
            channels: BTreeMap::new(),
            allow: Allow::default(),
            admins: vec![],
            memory_turns: default_memory_turns(),
            adapters: vec![],
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// The knowledge base this channel answers from, instead of the bot's.
    pub knowledge_base: Option<String>,
    /// Retrieval settings for this channel, over the bot's.
    #[serde(default)]
    pub retrieval: RetrievalOverride,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    /// User ids.
    #[serde(default)]
    pub users: Vec<String>,
    /// Discord role ids.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Telegram chat ids / Discord channel ids.
    #[serde(default)]
    pub chats: Vec<String>,
}

impl Allow {
    pub fn permits(&self, user: &str, roles: &[String], chat: &str) -> bool {
        let open = self.users.is_empty() && self.roles.is_empty() && self.chats.is_empty();
        open || self.users.iter().any(|u| u == user)
            || self.roles.iter().any(|r| roles.contains(r))
            || self.chats.iter().any(|c| c == chat)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum AdapterConfig {
    /// Standard input and output (`lore chat`, or `lore run` in a terminal).
    #[default]
    Console,
    /// A Discord bot (token from the environment variable `token_env`).
    #[cfg(feature = "discord")]
    Discord(lore_adapters::discord::DiscordConfig),
    /// A Telegram bot (token from the environment variable `token_env`).
    #[cfg(feature = "telegram")]
    Telegram(lore_adapters::telegram::TelegramConfig),
    /// A Discord bot in a lore built without the `discord` feature: refused by name.
    #[cfg(not(feature = "discord"))]
    Discord(NotBuilt),
    /// A Telegram bot in a lore built without the `telegram` feature: refused by name.
    #[cfg(not(feature = "telegram"))]
    Telegram(NotBuilt),
}

/// The keys of a part this binary was built without, read and set aside so the config
/// check can name the cargo feature instead of calling the `type` unknown.
#[derive(Debug, Clone)]
pub struct NotBuilt;

impl<'de> Deserialize<'de> for NotBuilt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| NotBuilt)
    }
}

impl AdapterConfig {
    /// The cargo feature this adapter needs and this binary lacks, if any.
    pub fn missing_feature(&self) -> Option<&'static str> {
        match self {
            #[cfg(not(feature = "discord"))]
            Self::Discord(NotBuilt) => Some("discord"),
            #[cfg(not(feature = "telegram"))]
            Self::Telegram(NotBuilt) => Some("telegram"),
            _ => None,
        }
    }
}

fn default_memory_days() -> u64 {
    30
}
fn default_shutdown_grace_seconds() -> u64 {
    30
}
fn default_max_waiting_questions() -> usize {
    64
}
fn default_max_waiting_per_person() -> usize {
    3
}
fn default_per_user_in_flight() -> usize {
    1
}
fn default_rerankers() -> Vec<RerankerConfig> {
    vec![RerankerConfig::Llm { candidates: 12 }]
}
fn default_top_k_chunks() -> usize {
    12
}
fn default_passages() -> usize {
    1
}
fn default_min_score() -> f32 {
    0.30
}
fn default_abstain_text() -> String {
    "I don't know: the knowledge base does not seem to cover that.".into()
}
fn default_abstain_hint() -> String {
    "The nearest it comes is {topic} ({source}); try asking about that.".into()
}
fn default_chunk_tokens() -> usize {
    160
}
fn default_overlap_tokens() -> usize {
    32
}
fn default_memory_turns() -> usize {
    6
}
/// More questions per chunk add little: they start to repeat each other.
pub const MAX_GENERATED_QUESTIONS: u32 = 20;

fn default_max_pages() -> usize {
    500
}

fn default_crawl_delay_ms() -> u64 {
    500
}

fn default_max_file_bytes() -> u64 {
    DEFAULT_MAX_FILE_BYTES
}

/// A configuration problem, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// Dotted path of the key, e.g. `bots.helper.knowledge_base`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Bot `name`, or an error naming the bots there are.
    pub fn bot(&self, name: &str) -> Result<&BotConfig, UnknownBot> {
        self.bots.get(name).ok_or_else(|| UnknownBot {
            file: self.file.clone(),
            name: name.to_string(),
            known: self.bots.keys().cloned().collect(),
        })
    }

    /// Reads and parses `file`, expands paths and checks what needs no file system. Does
    /// not touch models or knowledge bases: see [`Config::validate_files`].
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            line: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(file, &text)
    }

    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let mut cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            let inner = e.into_inner();
            let line = inner.location().map(|l| l.line()).or_else(|| locate(text, &key));
            // serde_yaml appends "at line X column Y"; the line is reported separately.
            let message = inner.to_string();
            let message = message.split(" at line ").next().unwrap_or(&message).to_string();
            ConfigError { file: file.to_path_buf(), line, key, message }
        })?;
        cfg.file = file.to_path_buf();
        cfg.source_text = text.to_string();
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let expand = |p: &Path, key: &str| -> Result<PathBuf, ConfigError> {
            expand_path(p, &base).map_err(|message| cfg.error(key, message))
        };
        let data_dir = resolve_data_dir(&cfg.data_dir, &base).map_err(|message| cfg.error("data_dir", message))?;
        let state_dir = match (&data_dir, cfg.state_dir.as_os_str().is_empty()) {
            (_, false) => expand(&cfg.state_dir, "state_dir")?,
            (DataDir::Folder(dir), true) => dir.clone(),
            (DataDir::ObjectStore(_), true) => expand(&default_object_store_state_dir(), "state_dir")?,
        };
        let gen = match cfg.models.generator.kind {
            ModelKind::Llama => expand(&cfg.models.generator.path, "models.generator.path")?,
            ModelKind::Openai => cfg.models.generator.path.clone(),
        };
        let emb = match cfg.models.embedder.kind {
            ModelKind::Llama => expand(&cfg.models.embedder.path, "models.embedder.path")?,
            ModelKind::Openai => cfg.models.embedder.path.clone(),
        };
        let mut tokenizers = [cfg.models.generator.tokenizer.clone(), cfg.models.embedder.tokenizer.clone()];
        for (file, section) in tokenizers.iter_mut().zip(["models.generator", "models.embedder"]) {
            if let Some(path) = file {
                *path = expand(path, &format!("{section}.tokenizer"))?;
            }
        }
        let reranker = match &cfg.models.reranker {
            Some(r) => Some(expand(&r.path, "models.reranker.path")?),
            None => None,
        };
        let mut bots = cfg.bots.clone();
        for (name, bot) in bots.iter_mut() {
            for (i, lora) in bot.adapters.iter_mut().enumerate() {
                lora.path = expand(&lora.path, &format!("bots.{name}.adapters.{i}.path"))?;
            }
            let key = format!("bots.{name}.retrieval.abstain.calibration");
            expand_calibration(&mut bot.retrieval.abstain, &|p| expand(p, &key))?;
            for (id, channel) in bot.channels.iter_mut() {
                let key = format!("bots.{name}.channels.{id}.retrieval.abstain.calibration");
                expand_calibration(&mut channel.retrieval.abstain, &|p| expand(p, &key))?;
            }
        }
        let mut retrieval = cfg.retrieval.clone();
        if let Some(file) = &retrieval.abstain.calibration {
            retrieval.abstain.calibration = Some(expand(file, "retrieval.abstain.calibration")?);
        }
        let mut kbs = cfg.knowledge_bases.clone();
        for (name, kb) in kbs.iter_mut() {
            let mut files = Vec::new();
            for (i, s) in kb.sources.iter().enumerate() {
                let key = format!("knowledge_bases.{name}.sources.{i}");
                match s.to_str().filter(|s| is_url(s)) {
                    Some(address) => {
                        parse_url(address).map_err(|why| cfg.error(&key, why))?;
                        kb.web_sources.push(address.to_string());
                    }
                    None => files.push(expand(s, &key)?),
                }
            }
            kb.sources = files;
        }
        cfg.bots = bots;
        cfg.retrieval = retrieval;
        cfg.data_dir = data_dir;
        cfg.state_dir = state_dir;
        cfg.models.generator.path = gen;
        cfg.models.embedder.path = emb;
        let [generator_tokenizer, embedder_tokenizer] = tokenizers;
        cfg.models.generator.tokenizer = generator_tokenizer;
        cfg.models.embedder.tokenizer = embedder_tokenizer;
        if let (Some(r), Some(path)) = (cfg.models.reranker.as_mut(), reranker) {
            r.path = path;
        }
        cfg.knowledge_bases = kbs;
        cfg.check_structure()?;
        Ok(cfg)
    }

    /// Every `abstain` section with its key: the top-level one, then each bot's and
    /// channel's that sets one.
    pub fn abstain_settings(&self) -> Vec<(String, &Abstain)> {
        let mut out = vec![("retrieval.abstain".to_string(), &self.retrieval.abstain)];
        for (name, bot) in &self.bots {
            if let Some(a) = &bot.retrieval.abstain {
                out.push((format!("bots.{name}.retrieval.abstain"), a));
            }
            for (id, channel) in &bot.channels {
                if let Some(a) = &channel.retrieval.abstain {
                    out.push((format!("bots.{name}.channels.{id}.retrieval.abstain"), a));
                }
            }
        }
        out
    }

    /// An error located at `key` of this file.
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: locate(&self.source_text, key),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// Checks that need no file system: names resolve, numbers make sense.
    fn check_structure(&self) -> Result<(), ConfigError> {
        for (name, bot) in &self.bots {
            if let Some(feature) = bot.adapter.missing_feature() {
                let why = format!(
                    "this lore was built without {feature}: build it with the `{feature}` feature (on by default: `cargo build --release -p lore`)"
                );
                return Err(self.error(&format!("bots.{name}.adapter.type"), why));
            }
        }
        let g = &self.models.generator;
        self.check_placement(&g.placement())?;
        self.check_placement(&self.models.embedder.placement())?;
        if self.models.embedder.kind == ModelKind::Openai && self.models.embedder.batch_texts == 0 {
            return Err(self.error("models.embedder.batch_texts", "must be at least 1"));
        }
        if g.context_tokens < 256 {
            return Err(self.error("models.generator.context_tokens", "must be at least 256"));
        }
        if g.max_answer_tokens == 0 || g.max_answer_tokens * 2 > g.context_tokens {
            return Err(
                self.error("models.generator.max_answer_tokens", "must be between 1 and half of context_tokens")
            );
        }
        if g.parallel == 0 || g.parallel > 64 {
            return Err(self.error("models.generator.parallel", "must be between 1 and 64"));
        }
        if g.batch_tokens < 32 {
            return Err(self.error("models.generator.batch_tokens", "must be at least 32"));
        }
        self.check_storage()?;
        if let Some(server) = &self.server {
            if server.api_keys.is_empty() && !server.listen.ip().is_loopback() {
                return Err(self.error(
                    "server.listen",
                    "without api_keys the server only listens on loopback (127.0.0.1 or ::1); add a key to listen elsewhere",
                ));
            }
            for (i, key) in server.api_keys.iter().enumerate() {
                if let Some(bot) = key.bots.iter().find(|b| !self.bots.contains_key(*b)) {
                    return Err(self.error(&format!("server.api_keys.{i}.bots"), format!("no bot named {bot:?}")));
                }
            }
            if server.max_body_bytes < 1024 {
                return Err(self.error("server.max_body_bytes", "must be at least 1024"));
            }
            let at_least_one = [
                ("max_connections", server.max_connections as u64),
                ("header_read_timeout_secs", server.header_read_timeout_secs),
                ("idle_timeout_secs", server.idle_timeout_secs),
                ("max_embedding_inputs", server.max_embedding_inputs as u64),
            ];
            if let Some((key, _)) = at_least_one.iter().find(|(_, value)| *value == 0) {
                return Err(self.error(&format!("server.{key}"), "must be at least 1"));
            }
            for (i, host) in server.allowed_hosts.iter().enumerate() {
                if let Err(why) = check_allowed_host(host) {
                    return Err(self.error(&format!("server.allowed_hosts.{i}"), why));
                }
            }
        }
        let a = &self.admission;
        if a.per_user_in_flight == 0 {
            return Err(self.error("admission.per_user_in_flight", "must be at least 1"));
        }
        if a.max_waiting_per_person == 0 {
            return Err(self.error("admission.max_waiting_per_person", "must be at least 1"));
        }
        if let Some(r) = &a.rate_limit {
            if r.questions == 0 || r.per_seconds == 0 {
                return Err(self.error("admission.rate_limit", "questions and per_seconds must be at least 1"));
            }
        }
        // Every question answered at once may queue one scoring job per `llm` candidate
        // besides its generation; the engine must take them all.
        let jobs = g.parallel * (1 + self.most_llm_candidates());
        if g.max_queue < jobs {
            return Err(self.error(
                "models.generator.max_queue",
                format!("must be at least {jobs}: {} answers at once, each with up to {} engine jobs (its `llm` reranker's candidates and its generation)", g.parallel, jobs / g.parallel),
            ));
        }
        self.check_chunking("chunking", &self.chunking)?;
        if let Some((key, why)) = self.parsing.invalid() {
            return Err(self.error(&format!("parsing.{key}"), why));
        }
        self.check_rerankers("retrieval.rerankers", &self.retrieval.rerankers)?;
        for (key, abstain) in self.abstain_settings() {
            if let Some(t) = abstain.threshold.filter(|t| !(0.0..=1.0).contains(t)) {
                return Err(self.error(&format!("{key}.threshold"), format!("{t} is not a probability (from 0 to 1)")));
            }
        }
        for (name, kb) in &self.knowledge_bases {
            if !valid_kb_name(name) {
                return Err(self.error(
                    &format!("knowledge_bases.{name}"),
                    "a knowledge base name may use letters, digits, '-' and '_' only",
                ));
            }
            if let Some(c) = &kb.chunking {
                self.check_chunking(&format!("knowledge_bases.{name}.chunking"), c)?;
            }
            if kb.max_pages == 0 {
                return Err(self.error(&format!("knowledge_bases.{name}.max_pages"), "must be at least 1"));
            }
            if kb.generated_questions > MAX_GENERATED_QUESTIONS {
                let why = format!("at most {MAX_GENERATED_QUESTIONS} (each is a generation per chunk at ingest)");
                return Err(self.error(&format!("knowledge_bases.{name}.generated_questions"), &why));
            }
            if kb.watch && kb.sources.is_empty() {
                let why = "needs file or folder `sources` to watch (web pages are fetched by `lore ingest`)";
                return Err(self.error(&format!("knowledge_bases.{name}.watch"), why));
            }
        }
        for (name, bot) in &self.bots {
            if bot.adapters.len() > 1 {
                let why = "one adapter per bot: llama.cpp's Rust binding (llama-cpp-2) sets one adapter at a time; merge them into one with llama.cpp's tools, or give each its own bot";
                return Err(self.error(&format!("bots.{name}.adapters"), why));
            }
            if !bot.adapters.is_empty() && self.models.generator.kind != ModelKind::Llama {
                let why = "LoRA adapters apply to a local generator (type: llama); servers such as vLLM serve adapters as models of their own: point another bot's generator at that model";
                return Err(self.error(&format!("bots.{name}.adapters"), why));
            }
            if let Some((i, lora)) = bot.adapters.iter().enumerate().find(|(_, l)| !l.has_valid_scale()) {
                return Err(self.error(
                    &format!("bots.{name}.adapters.{i}.scale"),
                    format!("{} must be a number from 0 up", lora.scale),
                ));
            }
            self.check_kb_name(&format!("bots.{name}.knowledge_base"), &bot.knowledge_base)?;
            if let Some(r) = &bot.retrieval.rerankers {
                self.check_rerankers(&format!("bots.{name}.retrieval.rerankers"), r)?;
            }
            for (ch, c) in &bot.channels {
                if let Some(kb) = &c.knowledge_base {
                    self.check_kb_name(&format!("bots.{name}.channels.{ch}.knowledge_base"), kb)?;
                }
                if let Some(r) = &c.retrieval.rerankers {
                    self.check_rerankers(&format!("bots.{name}.channels.{ch}.retrieval.rerankers"), r)?;
                }
            }
        }
        Ok(())
    }

    /// A model's file (`type: llama`) or its pool of servers (`type: openai`), and no
    /// keys of the other kind.
    fn check_placement(&self, p: &Placement) -> Result<(), ConfigError> {
        let section = p.section;
        match p.kind {
            ModelKind::Llama => {
                if p.path.as_os_str().is_empty() {
                    return Err(
                        self.error(section, "missing field `path` (a GGUF file), or `type: openai` with `endpoints`")
                    );
                }
                if let Some(key) = [
                    ("endpoints", !p.endpoints.is_empty()),
                    ("model", p.model.is_some()),
                    ("api_key_env", p.api_key_env.is_some()),
                    ("tokenizer", p.tokenizer.is_some()),
                ]
                .iter()
                .find_map(|(key, set)| set.then_some(key))
                {
                    return Err(self.error(&format!("{section}.{key}"), "is for `type: openai` (a pool of servers)"));
                }
            }
            ModelKind::Openai => {
                if !p.path.as_os_str().is_empty() {
                    return Err(
                        self.error(&format!("{section}.path"), "a pool of servers (`type: openai`) has no model file")
                    );
                }
                if p.endpoints.is_empty() {
                    return Err(self
                        .error(&format!("{section}.endpoints"), "name at least one server, e.g. http://gpu1:8000/v1"));
                }
                if let Some(bad) = p.endpoints.iter().find(|e| !(e.starts_with("http://") || e.starts_with("https://")))
                {
                    return Err(self.error(&format!("{section}.endpoints"), format!("{bad:?} is not an http(s) URL")));
                }
                if p.model.is_none_or(str::is_empty) {
                    return Err(self.error(&format!("{section}.model"), "name the model the servers serve"));
                }
                if p.max_in_flight == 0 {
                    return Err(self.error(&format!("{section}.max_in_flight"), "must be at least 1"));
                }
                if p.request_deadline_secs == 0 {
                    return Err(self.error(&format!("{section}.request_deadline_secs"), "must be at least 1"));
                }
            }
        }
        Ok(())
    }

    /// The most candidates any `llm` reranker of any bot or channel scores.
    pub fn most_llm_candidates(&self) -> usize {
        let bots = self.bots.values();
        let overrides =
            bots.flat_map(|b| std::iter::once(&b.retrieval).chain(b.channels.values().map(|c| &c.retrieval)));
        overrides
            .filter_map(|o| o.rerankers.as_ref())
            .chain(std::iter::once(&self.retrieval.rerankers))
            .flatten()
            .filter_map(|r| match r {
                RerankerConfig::Llm { candidates } => Some(*candidates),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    fn check_chunking(&self, key: &str, c: &Chunking) -> Result<(), ConfigError> {
        if c.max_tokens < 16 {
            return Err(self.error(&format!("{key}.max_tokens"), "must be at least 16"));
        }
        if c.overlap_tokens * 2 > c.max_tokens {
            return Err(self.error(&format!("{key}.overlap_tokens"), "must be at most half of max_tokens"));
        }
        Ok(())
    }

    fn check_rerankers(&self, key: &str, rerankers: &[RerankerConfig]) -> Result<(), ConfigError> {
        for (i, r) in rerankers.iter().enumerate() {
            if matches!(r, RerankerConfig::CrossEncoder { .. }) && self.models.reranker.is_none() {
                return Err(self.error(
                    &format!("{key}.{i}"),
                    "the cross-encoder reranker needs a reranking model: add `models.reranker.path` (a bge-reranker GGUF, for instance)",
                ));
            }
        }
        Ok(())
    }

    fn check_kb_name(&self, key: &str, kb: &str) -> Result<(), ConfigError> {
        if self.knowledge_bases.contains_key(kb) {
            return Ok(());
        }
        let known: Vec<&str> = self.knowledge_bases.keys().map(String::as_str).collect();
        Err(self.error(
            key,
            format!(
                "unknown knowledge base {kb:?} (known: {})",
                if known.is_empty() { "none".into() } else { known.join(", ") }
            ),
        ))
    }

    /// Checks that need the file system: the model files exist and are GGUF models llama.cpp
    /// can run, knowledge-base sources exist. Runs before anything is loaded.
    pub fn validate_files(&self) -> Result<(), ConfigError> {
        if self.models.generator.kind == ModelKind::Llama {
            let path = &self.models.generator.path;
            let arch =
                lore_engine::check_model_file(path).map_err(|e| self.error("models.generator.path", e.to_string()))?;
            for (name, bot) in &self.bots {
                for (i, lora) in bot.adapters.iter().enumerate() {
                    lore_engine::check_adapter_file(&lora.path, &arch)
                        .map_err(|e| self.error(&format!("bots.{name}.adapters.{i}.path"), e.to_string()))?;
                }
            }
        }
        if self.models.embedder.kind == ModelKind::Llama {
            let path = &self.models.embedder.path;
            lore_engine::check_model_file(path).map_err(|e| self.error("models.embedder.path", e.to_string()))?;
        }
        let tokenizers = [
            (&self.models.generator.tokenizer, "models.generator.tokenizer"),
            (&self.models.embedder.tokenizer, "models.embedder.tokenizer"),
        ];
        for (file, key) in tokenizers {
            if let Some(path) = file.as_ref().filter(|p| !p.is_file()) {
                return Err(self.error(key, format!("{} is not a file (a tokenizer.json)", path.display())));
            }
        }
        if let Some(r) = &self.models.reranker {
            lore_engine::check_model_file(&r.path).map_err(|e| self.error("models.reranker.path", e.to_string()))?;
        }
        for (name, kb) in &self.knowledge_bases {
            for (i, s) in kb.sources.iter().enumerate() {
                if !s.exists() {
                    return Err(self.error(
                        &format!("knowledge_bases.{name}.sources.{i}"),
                        format!("{} does not exist", s.display()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `storage` goes with an object-store `data_dir`, and its endpoint is a URL it may use.
    fn check_storage(&self) -> Result<(), ConfigError> {
        let Some(storage) = &self.storage else { return Ok(()) };
        if let DataDir::Folder(dir) = &self.data_dir {
            return Err(self.error(
                "storage",
                format!("is for knowledge bases in object storage (data_dir: s3://bucket/prefix); data_dir is the folder {}", dir.display()),
            ));
        }
        if let Some(endpoint) = &storage.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(self.error(
                    "storage.endpoint",
                    format!("{endpoint:?} is not a URL: write e.g. https://minio.example.org:9000"),
                ));
            }
            if endpoint.starts_with("http://") && !storage.allow_http {
                return Err(self.error(
                    "storage.endpoint",
                    format!("{endpoint} is unencrypted http: set `allow_http: true` if it is on this machine or a trusted network"),
                ));
            }
        }
        if storage.region.as_deref().is_some_and(str::is_empty) {
            return Err(
                self.error("storage.region", "is empty: name the bucket's region (e.g. eu-west-1) or leave it out")
            );
        }
        Ok(())
    }

    /// LanceDB storage options for an object-store `data_dir`: only what the config sets, so
    /// the standard `AWS_*` variables fill in the rest.
    pub fn storage_options(&self) -> BTreeMap<String, String> {
        let mut options = BTreeMap::new();
        let Some(storage) = &self.storage else { return options };
        if let Some(endpoint) = &storage.endpoint {
            options.insert("aws_endpoint".to_string(), endpoint.clone());
        }
        if let Some(region) = &storage.region {
            options.insert("aws_region".to_string(), region.clone());
        }
        if storage.allow_http {
            options.insert("allow_http".to_string(), "true".to_string());
        }
        options
    }

    /// Where this daemon keeps its conversations.
    pub fn conversations_dir(&self) -> PathBuf {
        self.state_dir.join("conversations")
    }

    /// How long conversation memory is kept (`memory_days`).
    pub fn memory_age(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.memory_days.saturating_mul(86_400))
    }

    /// How long answers in progress may take to finish on shutdown.
    pub fn shutdown_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.shutdown_grace_seconds)
    }

    /// Every bot's LoRA adapter files, each once, in a fixed order: what the generator loads.
    pub fn adapter_files(&self) -> Vec<PathBuf> {
        let bots = self.bots.values().flat_map(|b| b.adapters.iter().map(|a| a.path.clone()));
        let mut files: Vec<PathBuf> = bots.chain(self.command_adapters.iter().cloned()).collect();
        files.sort();
        files.dedup();
        files
    }

    /// Chunking for a knowledge base: its own, else the defaults.
    pub fn chunking_for(&self, kb: &str) -> &Chunking {
        self.knowledge_bases.get(kb).and_then(|k| k.chunking.as_ref()).unwrap_or(&self.chunking)
    }
}

pub use lore_plugins::store::valid_kb_name;

/// `data_dir` as written, expanded: a folder (relative to `base`), or an `s3://` URI.
fn resolve_data_dir(written: &DataDir, base: &Path) -> Result<DataDir, String> {
    let raw = match written {
        DataDir::Folder(path) => path.to_str().ok_or_else(|| format!("path {} is not UTF-8", path.display()))?,
        DataDir::ObjectStore(uri) => uri.as_str(),
    };
    let text = expand_vars(raw)?;
    let Some((scheme, rest)) = text.split_once("://") else {
        return Ok(DataDir::Folder(rooted(text, base)?));
    };
    if scheme != "s3" {
        return Err(format!(
            "{text:?}: knowledge bases live in a folder or in S3-compatible object storage (s3://bucket/prefix), not {scheme}://"
        ));
    }
    let bucket = rest.split('/').next().unwrap_or("");
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !bucket_ok {
        return Err(format!(
            "{text:?}: {bucket:?} is not a bucket name (3 to 63 lowercase letters, digits, '-' and '.'); write s3://bucket/prefix"
        ));
    }
    Ok(DataDir::ObjectStore(text.trim_end_matches('/').to_string()))
}

/// Expands `~`, `${VAR}` and `${VAR:-default}`; joins relative paths to `base`.
pub fn expand_path(p: &Path, base: &Path) -> Result<PathBuf, String> {
    let raw = p.to_str().ok_or_else(|| format!("path {} is not UTF-8", p.display()))?;
    rooted(expand_vars(raw)?, base)
}

/// An expanded path with `~` replaced and, when relative, joined to `base`.
fn rooted(mut out: String, base: &Path) -> Result<PathBuf, String> {
    if out == "~" || out.starts_with("~/") {
        let home = std::env::var("HOME").map_err(|_| "HOME is not set, cannot expand ~".to_string())?;
        out = format!("{home}{}", &out[1..]);
    }
    let path = PathBuf::from(out);
    Ok(if path.is_relative() { base.join(path) } else { path })
}

/// Expands `${VAR}` and `${VAR:-default}`.
fn expand_vars(raw: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').ok_or_else(|| format!("unclosed ${{ in {raw:?}"))? + start;
        let inner = &rest[start + 2..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match std::env::var(name).ok().filter(|v| !v.is_empty()) {
            Some(v) => out.push_str(&v),
            None => match default {
                Some(d) => out.push_str(d),
                None => return Err(format!("environment variable {name} is not set (used in {raw:?})")),
            },
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Line (1-based) of a dotted key path in block-style YAML, if it can be found.
pub fn locate(text: &str, key: &str) -> Option<usize> {
    if key.is_empty() {
        return None;
    }
    let parts: Vec<&str> = key.split('.').collect();
    let mut want = 0;
    let mut min_indent = 0;
    let mut best = None;
    let mut list_index: Option<(usize, usize)> = None; // (indent of the list, items seen)
    for (no, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if want > 0 && indent < min_indent {
            break;
        }
        if want >= parts.len() {
            break;
        }
        let part = parts[want];
        if let Ok(i) = part.parse::<usize>() {
            // A list item: count "- " entries at one indent.
            if let Some(item) = trimmed.strip_prefix("- ") {
                let (ind, seen) = *list_index.get_or_insert((indent, 0));
                if indent == ind {
                    if seen == i {
                        best = Some(no + 1);
                        want += 1;
                        min_indent = indent + 2;
                        let _ = item;
                    }
                    list_index = Some((ind, seen + 1));
                }
            }
            continue;
        }
        let key_text = trimmed.trim_start_matches("- ");
        let name = key_text.split(':').next().unwrap_or("").trim().trim_matches(|c| c == '"' || c == '\'');
        if indent >= min_indent && name == part && key_text.contains(':') {
            best = Some(no + 1);
            want += 1;
            min_indent = indent + 1;
            list_index = None;
        }
    }
    best
}

/// A bot the command line or a request named that the config does not have.
#[derive(Debug, thiserror::Error)]
#[error("{}: no bot named {name:?} (configured: {})", file.display(), if known.is_empty() { "none".to_string() } else { known.join(", ") })]
pub struct UnknownBot {
    pub file: PathBuf,
    pub name: String,
    pub known: Vec<String>,
}

/// Why `entry` cannot be a `server.allowed_hosts` entry, if it cannot.
pub fn check_allowed_host(entry: &str) -> Result<(), String> {
    let valid = entry.parse::<hyper::http::uri::Authority>().is_ok_and(|authority| {
        let port = &authority.as_str()[authority.host().len()..];
        !authority.as_str().contains('@')
            && !authority.host().is_empty()
            && (port.is_empty() || port.strip_prefix(':').is_some_and(|p| p.parse::<u16>().is_ok()))
    });
    if valid {
        return Ok(());
    }
    Err(format!(
        "{entry:?} is not a host name with an optional port, such as lore.example.com or lore.example.com:8443"
    ))
}

/// Files over this many bytes are skipped unless a knowledge base says otherwise.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 20 * 1024 * 1024;

/// The `parsing:` section: how much one document's parse may take.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParsingLimits {
    /// Memory one document's parse may take, in MiB, beyond the parser program's own (the
    /// child's address space, `RLIMIT_AS`; the document's bytes count). A document that
    /// needs more, such as a PDF stream that inflates to gigabytes, is skipped; so is one
    /// whose text comes to more than this.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// CPU seconds one document's parse may use (`RLIMIT_CPU`); a document that needs more
    /// is skipped.
    #[serde(default = "default_cpu_secs")]
    pub cpu_secs: u64,
    /// Seconds one document's parse may take from start to end, waiting for the CPU
    /// included; then the parser is killed and the document skipped.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_memory_mib() -> u64 {
    1024
}
fn default_cpu_secs() -> u64 {
    60
}
fn default_timeout_secs() -> u64 {
    120
}

impl Default for ParsingLimits {
    fn default() -> Self {
        Self { memory_mib: default_memory_mib(), cpu_secs: default_cpu_secs(), timeout_secs: default_timeout_secs() }
    }
}

/// Whether a source names a web page rather than a file.
pub fn is_url(source: &str) -> bool {
    let lower = source.get(..8).unwrap_or(source).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// A start page's address, or what is wrong with it.
pub fn parse_url(source: &str) -> Result<url::Url, String> {
    let mut url = url::Url::parse(source).map_err(|e| format!("{source} is not a web address: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("{source} is not an http:// or https:// address"));
    }
    url.set_fragment(None);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "\
models:
  generator:
    path: /m/gen.gguf
  embedder:
    path: /m/emb.gguf
knowledge_bases:
  docs:
    sources: [notes]
bots:
  helper:
    knowledge_base: docs
";

    #[test]
    fn a_good_config_parses_and_resolves_relative_paths() {
        let cfg = Config::parse(Path::new("/etc/lore/lore.yaml"), OK).unwrap();
        assert_eq!(cfg.knowledge_bases["docs"].sources, vec![PathBuf::from("/etc/lore/notes")]);
        assert_eq!(cfg.models.generator.context_tokens, 2048);
        assert_eq!(cfg.bots["helper"].knowledge_base, "docs");
    }

    #[test]
    fn an_unknown_key_names_file_line_and_key() {
        let text = OK.replace("    path: /m/gen.gguf\n", "    path: /m/gen.gguf\n    gpu_layer: 3\n");
        let e = Config::parse(Path::new("lore.yaml"), &text).unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.key.starts_with("models.generator"), "{e}");
        assert!(e.message.contains("unknown field `gpu_layer`"), "{e}");
        assert!(e.to_string().starts_with("lore.yaml:4: models.generator"), "{e}");
    }

    #[test]
    fn an_unknown_knowledge_base_is_located() {
        let text = OK.replace("knowledge_base: docs", "knowledge_base: nope");
        let e = Config::parse(Path::new("lore.yaml"), &text).unwrap_err();
        assert_eq!(e.key, "bots.helper.knowledge_base");
        assert_eq!(e.line, Some(11));
        assert!(e.message.contains("unknown knowledge base \"nope\" (known: docs)"), "{e}");
    }

    #[test]
    fn a_wrong_type_is_located() {
        let text = OK.replace("    path: /m/gen.gguf\n", "    path: /m/gen.gguf\n    parallel: many\n");
        let e = Config::parse(Path::new("lore.yaml"), &text).unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert_eq!(e.key, "models.generator.parallel");
    }

    #[test]
    fn an_engine_queue_too_small_for_the_llm_reranker_is_named() {
        let text = OK.replace("    path: /m/gen.gguf\n", "    path: /m/gen.gguf\n    max_queue: 20\n")
            + "    retrieval:\n      rerankers: [{type: llm, candidates: 12}]\n";
        let e = Config::parse(Path::new("lore.yaml"), &text).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("models.generator.max_queue", Some(4)));
        assert!(e.message.contains("at least 52"), "{e}");
    }

    #[test]
    fn admission_defaults_and_limits() {
        let cfg = Config::parse(Path::new("lore.yaml"), OK).unwrap();
        assert_eq!(cfg.admission, Admission::default());
        assert_eq!(cfg.admission.max_waiting_questions, 64);
        let text = OK.to_string() + "admission:\n  rate_limit: {questions: 0, per_seconds: 60}\n";
        let e = Config::parse(Path::new("lore.yaml"), &text).unwrap_err();
        assert_eq!(e.key, "admission.rate_limit", "{e}");
    }

    #[test]
    fn the_server_listens_beyond_loopback_only_with_keys_and_keys_name_real_bots() {
        let cfg = Config::parse(Path::new("lore.yaml"), &(OK.to_string() + "server: {}\n")).unwrap();
        assert_eq!(cfg.server.unwrap().listen.to_string(), "127.0.0.1:8080");
        let open = OK.to_string() + "server:\n  listen: 0.0.0.0:8080\n";
        let e = Config::parse(Path::new("lore.yaml"), &open).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("server.listen", Some(13)), "{e}");
        let keyed = open.clone() + "  api_keys: [{key_env: K}]\n";
        assert!(Config::parse(Path::new("lore.yaml"), &keyed).is_ok());
        let wrong_bot = open + "  api_keys: [{key_env: K, bots: [nobody]}]\n";
        let e = Config::parse(Path::new("lore.yaml"), &wrong_bot).unwrap_err();
        assert_eq!(e.key, "server.api_keys.0.bots", "{e}");
        assert!(e.message.contains("nobody"), "{e}");
    }

    #[test]
    fn the_servers_limits_have_defaults_and_bad_ones_name_their_key() {
        let cfg = Config::parse(Path::new("lore.yaml"), &(OK.to_string() + "server: {}\n")).unwrap();
        let server = cfg.server.unwrap();
        assert_eq!((server.max_connections, server.max_connections_per_ip), (512, 64));
        assert_eq!((server.header_read_timeout_secs, server.idle_timeout_secs), (10, 60));
        assert_eq!((server.max_embedding_inputs, server.allowed_hosts.len()), (256, 0));
        for (text, key) in [
            ("server:\n  max_connections: 0\n", "server.max_connections"),
            ("server:\n  header_read_timeout_secs: 0\n", "server.header_read_timeout_secs"),
            ("server:\n  allowed_hosts: [lore.example.com, \"http://x/\"]\n", "server.allowed_hosts.1"),
        ] {
            let e = Config::parse(Path::new("lore.yaml"), &(OK.to_string() + text)).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
        let off = OK.to_string() + "server:\n  max_connections_per_ip: 0\n  allowed_hosts: [lore.example.com:8443]\n";
        assert!(Config::parse(Path::new("lore.yaml"), &off).is_ok(), "0 turns the per-address cap off");
    }

    #[test]
    fn watch_needs_sources_and_max_file_bytes_defaults_to_20_mib() {
        let cfg = Config::parse(Path::new("lore.yaml"), OK).unwrap();
        assert_eq!(cfg.knowledge_bases["docs"].max_file_bytes, 20 * 1024 * 1024);
        assert!(!cfg.knowledge_bases["docs"].watch);
        let text = OK.replace("    sources: [notes]\n", "    watch: true\n");
        let e = Config::parse(Path::new("lore.yaml"), &text).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("knowledge_bases.docs.watch", Some(8)), "{e}");
    }

    #[test]
    fn a_pool_of_servers_needs_endpoints_and_a_model_and_no_file() {
        let pool = "    type: openai\n    endpoints: [http://gpu1:8000/v1]\n    model: gpt-j\n";
        let text = |generator: &str, extra: &str| OK.replace("    path: /m/gen.gguf\n", generator) + extra;
        let parse = |text: String| Config::parse(Path::new("lore.yaml"), &text);
        // Whether the servers can score for the `llm` reranker is asked at start.
        let cfg = parse(text(pool, "")).unwrap();
        assert_eq!((cfg.models.generator.kind, cfg.models.generator.name()), (ModelKind::Openai, "gpt-j".into()));
        assert_eq!(cfg.models.generator.api, RemoteApi::Chat);
        let key = |generator: &str, extra: &str| parse(text(generator, extra)).unwrap_err().key;
        assert_eq!(key("    type: openai\n    model: x\n", ""), "models.generator.endpoints");
        assert_eq!(
            key("    type: openai\n    endpoints: [gpu1:8000]\n    model: x\n", ""),
            "models.generator.endpoints"
        );
        assert_eq!(key("    type: openai\n    endpoints: [http://a/v1]\n", ""), "models.generator.model");
        assert_eq!(cfg.models.generator.request_deadline_secs, 300);
        assert_eq!(key(&format!("{pool}    request_deadline_secs: 0\n"), ""), "models.generator.request_deadline_secs");
        assert_eq!(key(&format!("{pool}    path: /m/gen.gguf\n"), ""), "models.generator.path");
        assert_eq!(key("    path: /m/gen.gguf\n    endpoints: [http://a/v1]\n", ""), "models.generator.endpoints");
        assert_eq!(key("    path: /m/gen.gguf\n    tokenizer: t.json\n", ""), "models.generator.tokenizer");
        assert_eq!(key("    gpu_layers: 3\n", ""), "models.generator");
    }

    #[test]
    fn an_embedder_pool_is_checked_like_a_generator_pool() {
        let text = |embedder: &str| OK.replace("    path: /m/emb.gguf\n", embedder);
        let parse = |embedder: &str| Config::parse(Path::new("lore.yaml"), &text(embedder));
        let cfg = parse("    type: openai\n    endpoints: [http://gpu1:8001/v1]\n    model: bge\n").unwrap();
        assert_eq!((cfg.models.embedder.kind, cfg.models.embedder.name()), (ModelKind::Openai, "bge".into()));
        assert_eq!(cfg.models.embedder.batch_texts, 64);
        let key = |embedder: &str| parse(embedder).unwrap_err().key;
        assert_eq!(key("    type: openai\n    model: bge\n"), "models.embedder.endpoints");
        assert_eq!(key("    type: openai\n    endpoints: [http://a/v1]\n"), "models.embedder.model");
        assert_eq!(
            key("    type: openai\n    endpoints: [http://a/v1]\n    model: bge\n    batch_texts: 0\n"),
            "models.embedder.batch_texts"
        );
        assert_eq!(key("    path: /m/emb.gguf\n    endpoints: [http://a/v1]\n"), "models.embedder.endpoints");
    }

    #[test]
    fn a_local_data_dir_keeps_conversations_beside_the_knowledge_bases() {
        let cfg = Config::parse(Path::new("/etc/lore/lore.yaml"), &format!("data_dir: data\n{OK}")).unwrap();
        assert_eq!(cfg.data_dir, DataDir::Folder(PathBuf::from("/etc/lore/data")));
        assert_eq!(cfg.conversations_dir(), PathBuf::from("/etc/lore/data/conversations"));
        let own = format!("data_dir: data\nstate_dir: /var/lib/lore\n{OK}");
        let cfg = Config::parse(Path::new("/etc/lore/lore.yaml"), &own).unwrap();
        assert_eq!(cfg.conversations_dir(), PathBuf::from("/var/lib/lore/conversations"));
    }

    #[test]
    fn an_s3_data_dir_takes_storage_options_and_keeps_state_locally() {
        std::env::set_var("LORE_TEST_BUCKET", "team-kb");
        let text = format!(
            "data_dir: s3://${{LORE_TEST_BUCKET}}/docs/\nstate_dir: /state\nstorage:\n  endpoint: http://127.0.0.1:9000\n  region: eu-west-1\n  allow_http: true\n{OK}"
        );
        let cfg = Config::parse(Path::new("/etc/lore/lore.yaml"), &text).unwrap();
        assert_eq!(cfg.data_dir, DataDir::ObjectStore("s3://team-kb/docs".into()));
        assert_eq!(cfg.data_dir.folder(), None);
        assert_eq!(cfg.conversations_dir(), PathBuf::from("/state/conversations"));
        let options = cfg.storage_options();
        let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            options,
            [("allow_http", "true"), ("aws_endpoint", "http://127.0.0.1:9000"), ("aws_region", "eu-west-1")]
        );
        // Without state_dir, conversations go to the user's state folder, not the bucket.
        let cfg = Config::parse(Path::new("/etc/lore/lore.yaml"), &format!("data_dir: s3://team-kb\n{OK}")).unwrap();
        assert!(cfg.conversations_dir().ends_with("lore/conversations"), "{}", cfg.conversations_dir().display());
        assert!(cfg.conversations_dir().is_absolute());
        assert!(cfg.storage_options().is_empty(), "AWS_* variables decide what the config leaves out");
    }

    #[test]
    fn bad_object_storage_settings_name_the_key_and_line() {
        let parse = |head: &str| Config::parse(Path::new("lore.yaml"), &format!("{head}{OK}")).unwrap_err();
        let e = parse("data_dir: gs://bucket/kb\n");
        assert_eq!((e.key.as_str(), e.line), ("data_dir", Some(1)), "{e}");
        assert!(e.message.contains("not gs://"), "{e}");
        let e = parse("data_dir: s3://Bad_Bucket/kb\n");
        assert!(e.message.contains("\"Bad_Bucket\" is not a bucket name"), "{e}");
        let e = parse("data_dir: s3:///kb\n");
        assert_eq!(e.key, "data_dir", "{e}");
        let e = parse("data_dir: /srv/kb\nstorage:\n  region: eu-west-1\n");
        assert_eq!((e.key.as_str(), e.line), ("storage", Some(2)), "{e}");
        assert!(e.message.contains("data_dir is the folder /srv/kb"), "{e}");
        let e = parse("data_dir: s3://kb-bucket\nstorage:\n  endpoint: http://minio:9000\n");
        assert_eq!((e.key.as_str(), e.line), ("storage.endpoint", Some(3)), "{e}");
        assert!(e.message.contains("allow_http: true"), "{e}");
        let e = parse("data_dir: s3://kb-bucket\nstorage:\n  endpoint: minio:9000\n  allow_http: true\n");
        assert!(e.message.contains("is not a URL"), "{e}");
        let e = parse("data_dir: s3://kb-bucket\nstorage:\n  access_key: AKIA\n");
        assert!(e.message.contains("unknown field `access_key`"), "{e}");
    }

    #[test]
    fn env_and_home_expand() {
        std::env::set_var("LORE_TEST_DIR_X", "/x");
        assert_eq!(expand_path(Path::new("${LORE_TEST_DIR_X}/a"), Path::new("/b")).unwrap(), PathBuf::from("/x/a"));
        assert_eq!(expand_path(Path::new("${LORE_UNSET_Y:-/d}/a"), Path::new("/b")).unwrap(), PathBuf::from("/d/a"));
        assert!(expand_path(Path::new("${LORE_UNSET_Y}/a"), Path::new("/b")).is_err());
        assert_eq!(expand_path(Path::new("rel"), Path::new("/b")).unwrap(), PathBuf::from("/b/rel"));
    }

    #[test]
    fn locate_finds_nested_keys_and_list_items() {
        let text = "a:\n  b:\n    - x\n    - y\n  c: 1\n";
        assert_eq!(locate(text, "a.c"), Some(5));
        assert_eq!(locate(text, "a.b.1"), Some(4));
        assert_eq!(locate(text, "a.zz"), Some(1));
    }

    #[test]
    fn an_allowed_host_entry_is_a_host_and_an_optional_port() {
        for ok in ["lore.example.com", "lore.example.com:8443", "10.0.0.5", "[::1]:8080"] {
            assert!(check_allowed_host(ok).is_ok(), "{ok}");
        }
        for bad in ["http://lore.example.com/", "user@lore.example.com", "", "lore.example.com:port"] {
            assert!(check_allowed_host(bad).is_err(), "{bad}");
        }
    }
}
