//! The YAML configuration: parsed into typed structs (unknown keys rejected), then checked
//! once at start-up. Every error names the file, the line and the key.
//!
//! One file per section, each with its keys (a doc comment on every one, where it is
//! defined), their defaults and the checks that concern that section: `models.rs`,
//! `storage.rs` (`data_dir`, `state_dir`, `storage:`), `retrieval.rs`, `knowledge.rs`
//! (`knowledge_bases`, `chunking`, file sizes, web addresses), `bots.rs`, `adapters.rs` (a
//! bot's platform), `line.rs`, `server.rs`, `parsing.rs`. This file holds [`Config`]
//! itself and the top-level scalars, reading and locating errors, and the checks that span
//! sections.
//!
//! Paths may use `~` and `${VAR}` / `${VAR:-default}`; relative paths are relative to the
//! config file's folder (`paths.rs`).

mod adapters;
mod bots;
mod knowledge;
mod line;
mod models;
mod parsing;
mod paths;
mod retrieval;
mod server;
mod storage;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use adapters::{AdapterConfig, NotBuilt};
pub use bots::{Allow, BotConfig, ChannelConfig, UnknownBot};
pub use knowledge::{
    is_url, parse_url, valid_kb_name, ChunkUnit, Chunking, KnowledgeBaseConfig, DEFAULT_MAX_FILE_BYTES,
    MAX_GENERATED_QUESTIONS,
};
pub use line::{LineSettings, RateLimit};
pub use lore_core::Sampling;
pub use lore_engine::settings::{EmbedderConfig, GeneratorConfig};
pub use models::{
    file_model_name, EmbedderPool, EmbedderSettings, GeneratorPool, GeneratorSettings, ModelKind, ModelSettings,
    Models, RemoteApi,
};
pub use parsing::ParsingLimits;
pub use paths::expand_path;
pub use retrieval::{Abstain, AnswerStyle, Instead, Retrieval, RetrievalOverride};
pub use server::{check_allowed_host, ApiKeyConfig, ServerConfig};
pub use storage::{DataDir, StorageConfig};

/// The configuration as written, after path expansion.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the LanceDB knowledge bases are: a folder (which also holds conversation
    /// memory unless `state_dir` says otherwise), or object storage, `s3://bucket/prefix`,
    /// which several daemons can serve from while one place ingests (see `storage`).
    #[serde(default = "storage::default_data_dir")]
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
    /// The models: generator, embedder, and optionally a reranker.
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
    /// Days the answers and the votes on them are kept for the quality page; gold cases
    /// stay until deleted.
    #[serde(default = "default_feedback_days")]
    pub feedback_days: u64,
    /// On SIGTERM or Ctrl-C, how long answers in progress may take to finish before their
    /// askers are told to ask again, in seconds (also read as `shutdown_grace_seconds`, its
    /// older spelling).
    #[serde(default = "default_shutdown_grace_secs", alias = "shutdown_grace_seconds")]
    pub shutdown_grace_secs: u64,
    /// The line questions wait in, shared by every bot and the API: how many wait, how
    /// many one person may have waiting, people taking turns (`admission:` is its older
    /// name).
    #[serde(default, alias = "admission")]
    pub line: LineSettings,
    /// The HTTP server (OpenAI-compatible API, chat page, health, metrics); off unless set.
    #[serde(default)]
    pub server: Option<ServerConfig>,
    /// The file this was read from (set by the loader).
    #[serde(skip)]
    pub file: PathBuf,
    /// The file's text, to find the line of a key an error names.
    #[serde(skip)]
    source_text: String,
}

fn default_memory_days() -> u64 {
    30
}

fn default_feedback_days() -> u64 {
    365
}

fn default_shutdown_grace_secs() -> u64 {
    30
}

/// A configuration problem, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// The line of the key (1-based), when it could be found.
    pub line: Option<usize>,
    /// Dotted path of the key, e.g. `bots.helper.knowledge_base`.
    pub key: String,
    /// What is wrong, and what to write instead.
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

/// The file being read, while the config is filled in: errors located in it, and paths
/// expanded relative to its folder.
struct Source<'a> {
    /// The config file.
    file: &'a Path,
    /// Its text.
    text: &'a str,
    /// The file's folder.
    base: PathBuf,
}

impl Source<'_> {
    /// An error located at `key`.
    fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: locate(self.text, key),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// `path` (the value of `key`) expanded: see [`expand_path`].
    fn expand(&self, path: &Path, key: &str) -> Result<PathBuf, ConfigError> {
        expand_path(path, &self.base).map_err(|message| self.error(key, message))
    }
}

impl Config {
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
            // serde_yaml appends "at line X column Y"; the line is reported separately.
            let message = inner.to_string();
            let message = message.split(" at line ").next().unwrap_or(&message).to_string();
            let (line, key, message) = match models::split_nested(&message) {
                // Read from a buffer: no location of its own, so the key is looked up.
                Some((inner_key, message)) => {
                    let key = if key.is_empty() || inner_key.is_empty() {
                        key + inner_key
                    } else {
                        format!("{key}.{inner_key}")
                    };
                    (locate(text, &key), key, message.to_string())
                }
                None => {
                    // A value's own check (`language: hebrew`) fails inside its map: serde_yaml
                    // names the map and points at it, so the key is looked up instead.
                    let map = key.rsplit_once('.').map(|(map, _)| format!("{map}: "));
                    match map.as_deref().and_then(|m| message.strip_prefix(m)) {
                        Some(own) => (locate(text, &key), key.clone(), own.to_string()),
                        None => (inner.location().map(|l| l.line()).or_else(|| locate(text, &key)), key, message),
                    }
                }
            };
            ConfigError { file: file.to_path_buf(), line, key, message }
        })?;
        let source = Source { file, text, base: file.parent().map(Path::to_path_buf).unwrap_or_default() };
        cfg.file = file.to_path_buf();
        cfg.source_text = text.to_string();
        cfg.data_dir = storage::resolve_data_dir(&cfg.data_dir, &source.base)
            .map_err(|message| source.error("data_dir", message))?;
        cfg.state_dir = storage::state_dir(&cfg.data_dir, &cfg.state_dir, &source)?;
        cfg.models.expand_paths(&source)?;
        for (name, bot) in cfg.bots.iter_mut() {
            bot.expand_paths(name, &source)?;
        }
        cfg.retrieval.abstain.expand_paths("retrieval.abstain", &source)?;
        for (name, kb) in cfg.knowledge_bases.iter_mut() {
            kb.read_sources(name, &source)?;
        }
        cfg.check_structure()?;
        Ok(cfg)
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

    /// Checks that need no file system: names resolve, numbers make sense. One step per
    /// section, in the order of their first errors.
    fn check_structure(&self) -> Result<(), ConfigError> {
        self.check_models()?;
        self.check_storage()?;
        self.check_server()?;
        self.check_line()?;
        self.check_engine_queue()?;
        self.check_chunking("chunking", &self.chunking)?;
        self.check_parsing()?;
        self.check_retrieval()?;
        self.check_knowledge_bases()?;
        self.check_bots()
    }

    /// Every question answered at once may queue one scoring job per `llm` candidate
    /// besides its generation; a local engine's queue (`models.generator.max_queue`) must
    /// take them all.
    fn check_engine_queue(&self) -> Result<(), ConfigError> {
        let GeneratorSettings::Llama(g) = &self.models.generator else { return Ok(()) };
        let jobs = g.parallel * (1 + self.most_llm_candidates());
        if g.max_queue < jobs {
            return Err(self.error(
                "models.generator.max_queue",
                format!("must be at least {jobs}: {} answers at once, each with up to {} engine jobs (its `llm` reranker's candidates and its generation)", g.parallel, jobs / g.parallel),
            ));
        }
        Ok(())
    }

    /// Checks that need the file system: the model files exist and are GGUF models llama.cpp
    /// can run, knowledge-base sources exist. Runs before anything is loaded.
    pub fn validate_files(&self) -> Result<(), ConfigError> {
        self.validate_model_files()?;
        self.validate_sources()
    }

    /// Where this daemon keeps its conversations.
    pub fn conversations_dir(&self) -> PathBuf {
        self.state_dir.join("conversations")
    }

    /// How long conversation memory is kept (`memory_days`).
    pub fn memory_age(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.memory_days.saturating_mul(86_400))
    }

    /// How long answers and votes are kept (`feedback_days`).
    pub fn feedback_age(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.feedback_days.saturating_mul(86_400))
    }

    /// The secret that person ids are hashed with before a vote stores them.
    pub fn feedback_salt_file(&self) -> PathBuf {
        self.state_dir.join("feedback.salt")
    }

    /// How long answers in progress may take to finish on shutdown.
    pub fn shutdown_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.shutdown_grace_secs)
    }
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

/// A good config to start tests from, and its parse.
#[cfg(test)]
mod testing {
    use std::path::Path;

    use super::{Config, ConfigError};

    pub(super) const OK: &str = "\
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

    /// `text` read as `lore.yaml`.
    pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("lore.yaml"), text)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{parse, OK};
    use super::*;

    #[test]
    fn a_good_config_parses_and_resolves_relative_paths() {
        let cfg = Config::parse(Path::new("/etc/lore/lore.yaml"), OK).unwrap();
        assert_eq!(cfg.knowledge_bases["docs"].sources, vec![PathBuf::from("/etc/lore/notes")]);
        assert_eq!(cfg.models.generator.context_tokens(), 2048);
        assert_eq!(cfg.bots["helper"].knowledge_base, "docs");
    }

    #[test]
    fn an_unknown_key_names_file_line_and_key() {
        let text = OK.replace("    path: /m/gen.gguf\n", "    path: /m/gen.gguf\n    gpu_layer: 3\n");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.key.starts_with("models.generator"), "{e}");
        assert!(e.message.contains("unknown field `gpu_layer`"), "{e}");
        assert!(e.to_string().starts_with("lore.yaml:4: models.generator"), "{e}");
        let e = parse(&OK.replace("  helper:\n", "  helper:\n    prompts: plain\n")).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("bots.helper.prompts", Some(11)), "{e}");
    }

    #[test]
    fn an_unknown_knowledge_base_is_located() {
        let text = OK.replace("knowledge_base: docs", "knowledge_base: nope");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key, "bots.helper.knowledge_base");
        assert_eq!(e.line, Some(11));
        assert!(e.message.contains("unknown knowledge base \"nope\" (known: docs)"), "{e}");
    }

    #[test]
    fn a_wrong_type_is_located() {
        let text = OK.replace("    path: /m/gen.gguf\n", "    path: /m/gen.gguf\n    parallel: many\n");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert_eq!(e.key, "models.generator.parallel");
        let e = parse(&(OK.to_string() + "memory_days: long\n")).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("memory_days", Some(12)), "{e}");
    }

    #[test]
    fn an_engine_queue_too_small_for_the_llm_reranker_is_named() {
        let text = OK.replace("    path: /m/gen.gguf\n", "    path: /m/gen.gguf\n    max_queue: 20\n")
            + "    retrieval:\n      rerankers: [{type: llm, candidates: 12}]\n";
        let e = parse(&text).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("models.generator.max_queue", Some(4)));
        assert!(e.message.contains("at least 52"), "{e}");
    }

    #[test]
    fn the_shutdown_grace_is_in_secs_and_its_older_spelling_still_reads() {
        assert_eq!(parse(OK).unwrap().shutdown_grace(), std::time::Duration::from_secs(30));
        for key in ["shutdown_grace_secs", "shutdown_grace_seconds"] {
            let cfg = parse(&format!("{key}: 5\n{OK}")).unwrap();
            assert_eq!(cfg.shutdown_grace_secs, 5, "{key}");
        }
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
}
