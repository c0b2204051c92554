//! `models:`: the generator, the embedder and the optional cross-encoder.
//!
//! The generator and the embedder are each tagged by `type`: `llama` (the default when
//! `type` is left out) is a GGUF file run here, whose keys are the engine's own settings
//! ([`GeneratorConfig`], [`EmbedderConfig`] in `lore_engine::settings`); `openai` is a pool
//! of OpenAI-compatible servers run by `lore-remote` ([`GeneratorPool`], [`EmbedderPool`]).
//! Each kind takes its own keys only: one of the other kind is an unknown field.

use std::path::{Path, PathBuf};

use lore_core::Sampling;
use lore_engine::settings::{EmbedderConfig, GeneratorConfig};
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use super::{Config, ConfigError, Source};

/// The `models:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Models {
    /// The model that writes answers (and scores passages for the `llm` reranker): a GGUF
    /// file run here, or (`type: openai`) a pool of OpenAI-compatible servers.
    pub generator: GeneratorSettings,
    /// The model that turns chunks and questions into vectors for retrieval: a GGUF file
    /// run here, or (`type: openai`) a pool of servers.
    pub embedder: EmbedderSettings,
    /// A cross-encoder GGUF (rank pooling) for the `cross-encoder` reranker; the keys of a
    /// local embedder.
    #[serde(default)]
    pub reranker: Option<EmbedderConfig>,
}

/// Where a model runs: the values of `type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// A GGUF file run in this process by llama.cpp.
    #[default]
    Llama,
    /// OpenAI-compatible servers (vLLM, TGI, llama.cpp's server, Ollama, another Lore).
    Openai,
}

/// A generator or an embedder, tagged by `type` (`llama` when left out): a GGUF file run
/// here, with the engine's keys (`Local`), or a pool of servers (`Pool`).
#[derive(Debug, Clone)]
pub enum ModelSettings<Local, Pool> {
    /// `type: llama`: a GGUF file run here by llama.cpp.
    Llama(Local),
    /// `type: openai`: OpenAI-compatible servers.
    Openai(Pool),
}

/// `models.generator`: the engine's [`GeneratorConfig`], or a [`GeneratorPool`].
pub type GeneratorSettings = ModelSettings<GeneratorConfig, GeneratorPool>;

/// `models.embedder`: the engine's [`EmbedderConfig`], or an [`EmbedderPool`].
pub type EmbedderSettings = ModelSettings<EmbedderConfig, EmbedderPool>;

/// `models.generator` with `type: openai`: OpenAI-compatible servers run the model;
/// requests are balanced over them and fail over (`lore-remote`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorPool {
    /// Base URLs ending in `/v1`, one per server.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// The model name the servers know.
    #[serde(default)]
    pub model: String,
    /// Environment variable holding the servers' API key, if they want one.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Requests one server takes at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// The longest one answer may take, failovers and its whole stream included; past it
    /// the answer fails in words and its place on the server is freed.
    #[serde(default = "default_request_deadline_secs")]
    pub request_deadline_secs: u64,
    /// `chat` (the servers apply the model's chat template: instruct models) or
    /// `completions` (Lore's prompt template, sent as plain text: base models such as
    /// GPT-J).
    #[serde(default)]
    pub api: RemoteApi,
    /// The model's `tokenizer.json`, for exact prompt token counts without asking the
    /// servers (else their `/tokenize`, else an estimate).
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Tokens one conversation may use, prompt and answer together: the servers' context
    /// window, which they do not report in a standard way.
    #[serde(default = "lore_engine::settings::default_context_tokens")]
    pub context_tokens: usize,
    /// Conversations answered at once.
    #[serde(default = "lore_engine::settings::default_parallel")]
    pub parallel: usize,
    /// Longest answer, in tokens.
    #[serde(default = "lore_engine::settings::default_max_answer_tokens")]
    pub max_answer_tokens: usize,
    /// How tokens are chosen (sent with every request).
    #[serde(default)]
    pub sampling: Sampling,
    /// The languages the model was trained on (ISO 639-1 codes: `en`, `he`, ...): whether
    /// it can answer (or embed) a knowledge base's language. Left out, the servers'
    /// tokenizer is tried on a sentence of each language.
    #[serde(default)]
    pub languages: Option<Vec<String>>,
}

/// Which OpenAI endpoint a pool of servers is asked through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemoteApi {
    /// `/chat/completions`: the servers apply the model's chat template.
    #[default]
    Chat,
    /// `/completions`: Lore's prompt template, sent as plain text.
    Completions,
}

/// `models.embedder` with `type: openai`: OpenAI-compatible servers embed, in batches
/// spread over them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedderPool {
    /// Base URLs ending in `/v1`, one per server.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// The model name the servers know.
    #[serde(default)]
    pub model: String,
    /// Environment variable holding the servers' API key, if they want one.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Requests one server takes at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// The longest one request (a batch of texts) may take, failovers included.
    #[serde(default = "default_request_deadline_secs")]
    pub request_deadline_secs: u64,
    /// Texts sent in one request.
    #[serde(default = "default_batch_texts")]
    pub batch_texts: usize,
    /// Most tokens the model takes per text: chunks are cut to fit.
    #[serde(default = "default_embed_tokens")]
    pub batch_tokens: usize,
    /// The model's `tokenizer.json`, for exact chunk sizes (else estimated at three bytes
    /// a token, which makes chunks smaller than they could be).
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// The languages the model was trained on (ISO 639-1 codes: `en`, `he`, ...): whether
    /// it can answer (or embed) a knowledge base's language. Left out, the servers'
    /// tokenizer is tried on a sentence of each language.
    #[serde(default)]
    pub languages: Option<Vec<String>>,
}

/// What a local model without a file is told.
const NO_PATH: &str = "missing field `path` (a GGUF file), or `type: openai` with `endpoints`";

fn default_max_in_flight() -> usize {
    8
}

fn default_request_deadline_secs() -> u64 {
    300
}

fn default_batch_texts() -> usize {
    64
}

fn default_embed_tokens() -> usize {
    EmbedderConfig::new(PathBuf::new()).batch_tokens
}

impl<Local, Pool> ModelSettings<Local, Pool> {
    /// Where the model runs.
    pub fn kind(&self) -> ModelKind {
        match self {
            Self::Llama(_) => ModelKind::Llama,
            Self::Openai(_) => ModelKind::Openai,
        }
    }
}

impl GeneratorSettings {
    /// The model's name as clients of Lore's HTTP API see it.
    pub fn name(&self) -> String {
        match self {
            Self::Llama(local) => file_model_name(&local.path),
            Self::Openai(pool) => pool.model.clone(),
        }
    }

    /// Tokens one conversation may use, prompt and answer together.
    pub fn context_tokens(&self) -> usize {
        match self {
            Self::Llama(local) => local.context_tokens,
            Self::Openai(pool) => pool.context_tokens,
        }
    }

    /// Conversations answered at once.
    pub fn parallel(&self) -> usize {
        match self {
            Self::Llama(local) => local.parallel,
            Self::Openai(pool) => pool.parallel,
        }
    }

    /// Longest answer, in tokens.
    pub fn max_answer_tokens(&self) -> usize {
        match self {
            Self::Llama(local) => local.max_answer_tokens,
            Self::Openai(pool) => pool.max_answer_tokens,
        }
    }

    /// How tokens are chosen.
    pub fn sampling(&self) -> &Sampling {
        match self {
            Self::Llama(local) => &local.sampling,
            Self::Openai(pool) => &pool.sampling,
        }
    }

    /// The languages the config says the model was trained on.
    pub fn languages(&self) -> Option<&[String]> {
        match self {
            Self::Llama(local) => local.languages.as_deref(),
            Self::Openai(pool) => pool.languages.as_deref(),
        }
    }
}

impl EmbedderSettings {
    /// The model's name as clients of Lore's HTTP API see it.
    pub fn name(&self) -> String {
        match self {
            Self::Llama(local) => file_model_name(&local.path),
            Self::Openai(pool) => pool.model.clone(),
        }
    }

    /// The languages the config says the model was trained on.
    pub fn languages(&self) -> Option<&[String]> {
        match self {
            Self::Llama(local) => local.languages.as_deref(),
            Self::Openai(pool) => pool.languages.as_deref(),
        }
    }
}

/// A model file's name as clients of Lore's HTTP API see it: without `.gguf`.
pub fn file_model_name(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into())
}

impl<'de, Local: DeserializeOwned, Pool: DeserializeOwned> Deserialize<'de> for ModelSettings<Local, Pool> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let section = Tagged::deserialize(d)?;
        Ok(match section.kind {
            ModelKind::Llama => Self::Llama(section.read::<Local, Pool, _>()?),
            ModelKind::Openai => Self::Openai(section.read::<Pool, Local, _>()?),
        })
    }
}

/// A model section as written: its `type` (`llama` when left out), and its other keys,
/// read once the type says whose they are.
struct Tagged {
    /// Its `type`.
    kind: ModelKind,
    /// Every key but `type`, with its value.
    keys: Mapping,
}

impl Tagged {
    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut keys = Mapping::deserialize(d)?;
        let kind = match keys.remove("type") {
            None => ModelKind::Llama,
            Some(tag) => ModelKind::deserialize(tag).map_err(|e| nested("type", e))?,
        };
        Ok(Self { kind, keys })
    }

    /// The keys as `T`, the settings of this kind; a key that `Other`, the other kind,
    /// takes is named as such.
    fn read<T: DeserializeOwned, Other: DeserializeOwned, E: de::Error>(self) -> Result<T, E> {
        let other = match self.kind {
            ModelKind::Llama => "openai",
            ModelKind::Openai => "llama",
        };
        serde_path_to_error::deserialize(Value::Mapping(self.keys)).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            let unknown = message.strip_prefix("unknown field `").and_then(|rest| rest.split('`').next());
            let message = match unknown {
                Some(key) if keys_of::<Other>().contains(&key) => {
                    format!("{message} (`{key}` is a key of `type: {other}`)")
                }
                _ if message == "missing field `path`" && self.kind == ModelKind::Llama => NO_PATH.to_string(),
                _ => message,
            };
            nested(if path == "." { "" } else { &path }, message)
        })
    }
}

/// Marks the key inside a model section in an error's message: the section is read from a
/// buffer, so its errors carry no place in the file; [`Config::parse`] takes the key back
/// out with [`split_nested`] and looks its line up.
const NESTED: char = '\u{1f}';

/// An error at `key` inside the section being read.
fn nested<E: de::Error>(key: &str, message: impl std::fmt::Display) -> E {
    E::custom(format!("{NESTED}{key}{NESTED}{message}"))
}

/// The key inside a model section and the message, from an error [`nested`] made (which
/// serde_yaml may have prefixed with a path of its own).
pub(super) fn split_nested(message: &str) -> Option<(&str, &str)> {
    message.split_once(NESTED)?.1.split_once(NESTED)
}

/// The keys a struct with a derived `Deserialize` takes: it names them when it asks for a
/// struct, which is all this deserializer answers.
fn keys_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Keys<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Keys<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("only a struct's keys are asked for"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("only a struct's keys are asked for"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut keys: &'static [&'static str] = &[];
    let _ = T::deserialize(Keys(&mut keys));
    keys
}

impl Models {
    /// The model files and tokenizers expanded (see [`super::expand_path`]).
    pub(super) fn expand_paths(&mut self, source: &Source) -> Result<(), ConfigError> {
        if let GeneratorSettings::Llama(local) = &mut self.generator {
            local.path = source.expand(&local.path, "models.generator.path")?;
        }
        if let EmbedderSettings::Llama(local) = &mut self.embedder {
            local.path = source.expand(&local.path, "models.embedder.path")?;
        }
        if let GeneratorSettings::Openai(GeneratorPool { tokenizer: Some(file), .. }) = &mut self.generator {
            *file = source.expand(file, "models.generator.tokenizer")?;
        }
        if let EmbedderSettings::Openai(EmbedderPool { tokenizer: Some(file), .. }) = &mut self.embedder {
            *file = source.expand(file, "models.embedder.tokenizer")?;
        }
        if let Some(reranker) = &mut self.reranker {
            reranker.path = source.expand(&reranker.path, "models.reranker.path")?;
        }
        Ok(())
    }
}

impl Config {
    /// `models`: each model's file or pool, and generator numbers the engine or the line
    /// can work with.
    pub(super) fn check_models(&self) -> Result<(), ConfigError> {
        let (generator, embedder) = (&self.models.generator, &self.models.embedder);
        match generator {
            GeneratorSettings::Llama(local) => self.check_model_file("models.generator", &local.path)?,
            GeneratorSettings::Openai(p) => {
                self.check_pool("models.generator", &p.endpoints, &p.model, p.max_in_flight, p.request_deadline_secs)?
            }
        }
        match embedder {
            EmbedderSettings::Llama(local) => self.check_model_file("models.embedder", &local.path)?,
            EmbedderSettings::Openai(p) => {
                self.check_pool("models.embedder", &p.endpoints, &p.model, p.max_in_flight, p.request_deadline_secs)?;
                if p.batch_texts == 0 {
                    return Err(self.error("models.embedder.batch_texts", "must be at least 1"));
                }
            }
        }
        let (context_tokens, max_answer_tokens) = (generator.context_tokens(), generator.max_answer_tokens());
        if context_tokens < 256 {
            return Err(self.error("models.generator.context_tokens", "must be at least 256"));
        }
        if max_answer_tokens == 0 || max_answer_tokens * 2 > context_tokens {
            return Err(
                self.error("models.generator.max_answer_tokens", "must be between 1 and half of context_tokens")
            );
        }
        if generator.parallel() == 0 || generator.parallel() > 64 {
            return Err(self.error("models.generator.parallel", "must be between 1 and 64"));
        }
        if matches!(generator, GeneratorSettings::Llama(local) if local.batch_tokens < 32) {
            return Err(self.error("models.generator.batch_tokens", "must be at least 32"));
        }
        self.check_languages("models.generator.languages", generator.languages())?;
        self.check_languages("models.embedder.languages", embedder.languages())
    }

    /// A model's `languages` are language codes, as a GGUF's `general.languages` are.
    fn check_languages(&self, key: &str, languages: Option<&[String]>) -> Result<(), ConfigError> {
        for code in languages.unwrap_or_default() {
            if !(2..=3).contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_lowercase()) {
                return Err(self.error(
                    key,
                    format!("{code:?} is not a language code: use ISO 639-1 codes such as en, he, ar, ru"),
                ));
            }
        }
        Ok(())
    }

    /// A local model names its file (an empty `path` is as good as none).
    fn check_model_file(&self, section: &str, path: &Path) -> Result<(), ConfigError> {
        if path.as_os_str().is_empty() {
            return Err(self.error(section, NO_PATH));
        }
        Ok(())
    }

    /// A pool names its servers and its model, and can take requests.
    fn check_pool(
        &self,
        section: &str,
        endpoints: &[String],
        model: &str,
        max_in_flight: usize,
        request_deadline_secs: u64,
    ) -> Result<(), ConfigError> {
        if endpoints.is_empty() {
            return Err(
                self.error(&format!("{section}.endpoints"), "name at least one server, e.g. http://gpu1:8000/v1")
            );
        }
        if let Some(bad) = endpoints.iter().find(|e| !(e.starts_with("http://") || e.starts_with("https://"))) {
            return Err(self.error(&format!("{section}.endpoints"), format!("{bad:?} is not an http(s) URL")));
        }
        if model.is_empty() {
            return Err(self.error(&format!("{section}.model"), "name the model the servers serve"));
        }
        if max_in_flight == 0 {
            return Err(self.error(&format!("{section}.max_in_flight"), "must be at least 1"));
        }
        if request_deadline_secs == 0 {
            return Err(self.error(&format!("{section}.request_deadline_secs"), "must be at least 1"));
        }
        Ok(())
    }

    /// The model files are GGUF models llama.cpp can run (and the bots' LoRA adapters fit
    /// the generator); the tokenizer files are there.
    pub(super) fn validate_model_files(&self) -> Result<(), ConfigError> {
        let (generator, embedder) = (&self.models.generator, &self.models.embedder);
        if let GeneratorSettings::Llama(local) = generator {
            let arch = lore_engine::check_model_file(&local.path)
                .map_err(|e| self.error("models.generator.path", e.to_string()))?;
            for (name, bot) in &self.bots {
                for (i, lora) in bot.adapters.iter().enumerate() {
                    lore_engine::check_adapter_file(&lora.path, &arch)
                        .map_err(|e| self.error(&format!("bots.{name}.adapters.{i}.path"), e.to_string()))?;
                }
            }
        }
        if let EmbedderSettings::Llama(local) = embedder {
            lore_engine::check_model_file(&local.path)
                .map_err(|e| self.error("models.embedder.path", e.to_string()))?;
        }
        let generator_tokenizer = match generator {
            GeneratorSettings::Openai(pool) => pool.tokenizer.as_deref(),
            GeneratorSettings::Llama(_) => None,
        };
        let embedder_tokenizer = match embedder {
            EmbedderSettings::Openai(pool) => pool.tokenizer.as_deref(),
            EmbedderSettings::Llama(_) => None,
        };
        let tokenizers =
            [(generator_tokenizer, "models.generator.tokenizer"), (embedder_tokenizer, "models.embedder.tokenizer")];
        for (file, key) in tokenizers {
            if let Some(path) = file.filter(|p| !p.is_file()) {
                return Err(self.error(key, format!("{} is not a file (a tokenizer.json)", path.display())));
            }
        }
        if let Some(r) = &self.models.reranker {
            lore_engine::check_model_file(&r.path).map_err(|e| self.error("models.reranker.path", e.to_string()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{parse, OK};
    use super::*;

    /// The config with `generator` in place of the generator's keys, and `extra` after.
    fn with_generator(generator: &str, extra: &str) -> String {
        OK.replace("    path: /m/gen.gguf\n", generator) + extra
    }

    fn pool(cfg: &Config) -> &GeneratorPool {
        match &cfg.models.generator {
            GeneratorSettings::Openai(pool) => pool,
            GeneratorSettings::Llama(_) => panic!("a local generator"),
        }
    }

    #[test]
    fn a_pool_of_servers_needs_endpoints_and_a_model_and_no_file() {
        let servers = "    type: openai\n    endpoints: [http://gpu1:8000/v1]\n    model: gpt-j\n";
        // Whether the servers can score for the `llm` reranker is asked at start.
        let cfg = parse(&with_generator(servers, "")).unwrap();
        assert_eq!((cfg.models.generator.kind(), cfg.models.generator.name()), (ModelKind::Openai, "gpt-j".into()));
        assert_eq!((pool(&cfg).api, pool(&cfg).request_deadline_secs), (RemoteApi::Chat, 300));
        let error = |generator: &str| parse(&with_generator(generator, "")).unwrap_err();
        let key = |generator: &str| error(generator).key;
        assert_eq!(key("    type: openai\n    model: x\n"), "models.generator.endpoints");
        assert_eq!(key("    type: openai\n    endpoints: [gpu1:8000]\n    model: x\n"), "models.generator.endpoints");
        assert_eq!(key("    type: openai\n    endpoints: [http://a/v1]\n"), "models.generator.model");
        assert_eq!(key(&format!("{servers}    request_deadline_secs: 0\n")), "models.generator.request_deadline_secs");
        let e = error("    gpu_layers: 3\n");
        assert_eq!((e.key.as_str(), e.line), ("models.generator", Some(2)), "{e}");
        assert!(e.message.contains("missing field `path` (a GGUF file), or `type: openai`"), "{e}");
    }

    #[test]
    fn a_key_of_the_other_kind_is_an_unknown_field_named_with_its_line() {
        let servers = "    type: openai\n    endpoints: [http://gpu1:8000/v1]\n    model: gpt-j\n";
        for (generator, line, field, kind) in [
            (format!("{servers}    path: /m/gen.gguf\n"), 6, "path", "llama"),
            (format!("{servers}    max_queue: 200\n"), 6, "max_queue", "llama"),
            ("    path: /m/gen.gguf\n    endpoints: [http://a/v1]\n".into(), 4, "endpoints", "openai"),
            ("    path: /m/gen.gguf\n    tokenizer: t.json\n".into(), 4, "tokenizer", "openai"),
        ] {
            let e = parse(&with_generator(&generator, "")).unwrap_err();
            assert_eq!((e.key.clone(), e.line), (format!("models.generator.{field}"), Some(line)), "{e}");
            let says = format!("unknown field `{field}`, expected one of");
            assert!(e.message.starts_with(&says), "{e}");
            assert!(e.message.ends_with(&format!("(`{field}` is a key of `type: {kind}`)")), "{e}");
        }
        let e = parse(&with_generator("    path: /m/gen.gguf\n    gpu_layer: 3\n", "")).unwrap_err();
        assert!(!e.message.contains("is a key of"), "a key of neither kind: {e}");
    }

    #[test]
    fn type_may_come_anywhere_and_a_wrong_one_is_located() {
        let late = "    endpoints: [http://gpu1:8000/v1]\n    model: gpt-j\n    parallel: 2\n    type: openai\n";
        let cfg = parse(&with_generator(late, "")).unwrap();
        assert_eq!((pool(&cfg).endpoints.len(), cfg.models.generator.parallel()), (1, 2));
        let cfg = parse(&with_generator("    type: llama\n    path: /m/gen.gguf\n", "")).unwrap();
        assert_eq!(cfg.models.generator.kind(), ModelKind::Llama);
        let e = parse(&with_generator("    type: gpu\n    path: /m/gen.gguf\n", "")).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("models.generator.type", Some(3)), "{e}");
        assert!(e.message.contains("unknown variant `gpu`, expected `llama` or `openai`"), "{e}");
        let sampling = "    path: /m/gen.gguf\n    sampling:\n      temperature: hot\n";
        let e = parse(&with_generator(sampling, "")).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("models.generator.sampling.temperature", Some(5)), "{e}");
    }

    #[test]
    fn an_embedder_pool_is_checked_like_a_generator_pool() {
        let text = |embedder: &str| OK.replace("    path: /m/emb.gguf\n", embedder);
        let parse = |embedder: &str| parse(&text(embedder));
        let cfg = parse("    type: openai\n    endpoints: [http://gpu1:8001/v1]\n    model: bge\n").unwrap();
        assert_eq!((cfg.models.embedder.kind(), cfg.models.embedder.name()), (ModelKind::Openai, "bge".into()));
        let EmbedderSettings::Openai(pool) = &cfg.models.embedder else { panic!("a pool") };
        assert_eq!((pool.batch_texts, pool.batch_tokens), (64, 512));
        let key = |embedder: &str| parse(embedder).unwrap_err().key;
        assert_eq!(key("    type: openai\n    model: bge\n"), "models.embedder.endpoints");
        assert_eq!(key("    type: openai\n    endpoints: [http://a/v1]\n"), "models.embedder.model");
        assert_eq!(
            key("    type: openai\n    endpoints: [http://a/v1]\n    model: bge\n    batch_texts: 0\n"),
            "models.embedder.batch_texts"
        );
        let e = parse("    path: /m/emb.gguf\n    endpoints: [http://a/v1]\n").unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("models.embedder.endpoints", Some(6)), "{e}");
        assert!(e.message.contains("`endpoints` is a key of `type: openai`"), "{e}");
    }

    #[test]
    fn a_models_languages_are_language_codes() {
        let cfg = parse(&with_generator("    path: /m/gen.gguf\n    languages: [en, he]\n", "")).unwrap();
        assert_eq!(cfg.models.generator.languages(), Some(["en".to_string(), "he".to_string()].as_slice()));
        assert_eq!(cfg.models.embedder.languages(), None, "left out: the GGUF or the tokenizer says");
        let servers = "    type: openai\n    endpoints: [http://gpu1:8000/v1]\n    model: m\n    languages: [ar]\n";
        assert_eq!(parse(&with_generator(servers, "")).unwrap().models.generator.languages().map(<[_]>::len), Some(1));
        let e = parse(&with_generator("    path: /m/gen.gguf\n    languages: [Hebrew]\n", "")).unwrap_err();
        assert_eq!(e.key, "models.generator.languages", "{e}");
        assert!(e.message.contains("\"Hebrew\" is not a language code"), "{e}");
    }

    #[test]
    fn a_local_model_takes_the_engines_keys_and_defaults() {
        let cfg = parse(OK).unwrap();
        let GeneratorSettings::Llama(local) = &cfg.models.generator else { panic!("a local generator") };
        assert_eq!((local.path.as_path(), local.parallel, local.max_queue), (Path::new("/m/gen.gguf"), 4, 64));
        let EmbedderSettings::Llama(local) = &cfg.models.embedder else { panic!("a local embedder") };
        assert_eq!(local.batch_tokens, 512);
        assert_eq!(keys_of::<EmbedderConfig>(), ["path", "gpu_layers", "threads", "batch_tokens", "languages"]);
    }
}
