//! How each model is loaded and run (`models.generator`, `models.embedder`,
//! `models.reranker` in the YAML config). The daemon's config embeds these; the engine
//! never reads the config file itself.

use std::path::PathBuf;

use lore_core::Sampling;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// A GGUF file: any llama.cpp-supported chat or base model.
    pub path: PathBuf,
    /// Layers offloaded to the GPU (0 = CPU only; a large number = all).
    #[serde(default)]
    pub gpu_layers: u32,
    /// Tokens one conversation may use, prompt and answer together.
    #[serde(default = "default_context_tokens")]
    pub context_tokens: usize,
    /// Conversations decoded together (continuous batching).
    #[serde(default = "default_parallel")]
    pub parallel: usize,
    /// Engine jobs (answers and `llm` reranker scorings) that may wait for a free
    /// sequence before new ones are refused.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// Tokens decoded per step (llama.cpp's n_batch).
    #[serde(default = "default_batch_tokens")]
    pub batch_tokens: usize,
    /// CPU threads; default: one per available core.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Longest answer, in tokens.
    #[serde(default = "default_max_answer_tokens")]
    pub max_answer_tokens: usize,
    /// How tokens are chosen.
    #[serde(default)]
    pub sampling: Sampling,
    /// Host memory (MiB) for prompts whose cells another conversation needed: saved, and
    /// restored when a new prompt starts the same way (the same passage asked about
    /// again), so it is not decoded again. 0 = keep none.
    #[serde(default = "default_prompt_cache_mib")]
    pub prompt_cache_mib: usize,
    /// The languages the model was trained on (ISO 639-1 codes: `en`, `he`, ...), for a
    /// GGUF that does not say (`general.languages`) or says wrong. Lore reads it to decide
    /// whether the model can answer (or embed) a knowledge base's language.
    #[serde(default)]
    pub languages: Option<Vec<String>>,
}

impl GeneratorConfig {
    /// Default settings for the model at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            gpu_layers: 0,
            context_tokens: default_context_tokens(),
            parallel: default_parallel(),
            max_queue: default_max_queue(),
            batch_tokens: default_batch_tokens(),
            threads: None,
            max_answer_tokens: default_max_answer_tokens(),
            sampling: Sampling::default(),
            prompt_cache_mib: default_prompt_cache_mib(),
            languages: None,
        }
    }
}

/// An encoder model: the embedder (mean pooling) or the cross-encoder (rank pooling).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedderConfig {
    /// A BERT-family GGUF: an embedding model for `models.embedder`, a reranking model
    /// (bge-reranker and the like) for `models.reranker`.
    pub path: PathBuf,
    /// Layers offloaded to the GPU (0 = CPU only; a large number = all).
    #[serde(default)]
    pub gpu_layers: u32,
    /// CPU threads; default: one per available core.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Most tokens per text (longer ones are cut) and per decode.
    #[serde(default = "default_embed_batch")]
    pub batch_tokens: usize,
    /// The languages the model was trained on (ISO 639-1 codes: `en`, `he`, ...), for a
    /// GGUF that does not say (`general.languages`) or says wrong. Lore reads it to decide
    /// whether the model can answer (or embed) a knowledge base's language.
    #[serde(default)]
    pub languages: Option<Vec<String>>,
}

impl EmbedderConfig {
    /// Default settings for the model at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path, gpu_layers: 0, threads: None, batch_tokens: default_embed_batch(), languages: None }
    }
}

pub fn default_context_tokens() -> usize {
    2048
}
pub fn default_parallel() -> usize {
    4
}
pub fn default_max_queue() -> usize {
    64
}
pub fn default_batch_tokens() -> usize {
    512
}
fn default_embed_batch() -> usize {
    512
}
fn default_prompt_cache_mib() -> usize {
    512
}
pub fn default_max_answer_tokens() -> usize {
    256
}
