//! The plugin traits: how texts become vectors, how passages are found and reordered, and
//! the models plugins may lean on. Implementations live in `lore-knowledge` (LanceDB) and
//! `lore-engine` (llama.cpp); plugin errors are `anyhow` because every implementation
//! brings its own.

use std::sync::Arc;

use async_trait::async_trait;

use crate::Hit;

/// Maps texts to unit-length vectors of a fixed dimension (cosine = dot product).
#[async_trait]
pub trait Embedder: Send + Sync {
    /// Length of every vector this embedder returns.
    fn dim(&self) -> usize;
    /// Tokens the model sees for `text`, its special tokens included (chunks are sized
    /// with it).
    fn count_tokens(&self, text: &str) -> usize;
    /// Most tokens one text may have; longer texts are cut.
    fn max_tokens(&self) -> usize;
    /// One vector per text, in order.
    async fn embed(&self, texts: &[String]) -> anyhow::Result<Vec<Vec<f32>>>;
}

/// Finds up to `k` chunks for a question in the knowledge base it was built for, best
/// first, each with its cosine similarity to the question where the retriever knows it.
#[async_trait]
pub trait Retriever: Send + Sync {
    async fn retrieve(&self, question: &str, k: usize) -> anyhow::Result<Vec<Hit>>;
}

/// Reorders or filters retrieved chunks before they reach the prompt.
#[async_trait]
pub trait Reranker: Send + Sync {
    /// Returns the hits to keep, best first; never hits it was not given.
    async fn rerank(&self, question: &str, hits: Vec<Hit>) -> anyhow::Result<Vec<Hit>>;
}

/// A language model that can say how likely a text is (the generator).
#[async_trait]
pub trait Scorer: Send + Sync {
    /// Mean log-probability of the tokens of `continuation` right after `context`.
    async fn logprob(&self, context: &str, continuation: &str) -> anyhow::Result<f64>;
}

/// A cross-encoder: reads a question and a passage together and scores their relevance
/// (higher = more relevant; the scale is the model's own).
#[async_trait]
pub trait PairScorer: Send + Sync {
    /// One score per passage, in order.
    async fn score_pairs(&self, question: &str, passages: &[String]) -> anyhow::Result<Vec<f32>>;
}

/// The models plugins may use when they are built.
#[derive(Clone)]
pub struct PluginContext {
    pub embedder: Arc<dyn Embedder>,
    /// Present when a generator is loaded (needed by the `llm` reranker).
    pub scorer: Option<Arc<dyn Scorer>>,
    /// Present when `models.reranker` is configured (needed by the `cross-encoder` reranker).
    pub cross_encoder: Option<Arc<dyn PairScorer>>,
}

/// Cosine similarity of two vectors (1 = same direction).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}
