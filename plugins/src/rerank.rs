//! Rerankers: reorder or filter retrieved chunks before they reach the prompt.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use crate::embedder::cosine;
use crate::{Embedder, Hit};

/// A language model that can say how likely a text is (the generator, through llama.cpp).
#[async_trait]
pub trait Scorer: Send + Sync {
    /// Mean log-probability of the tokens of `continuation` right after `context`.
    async fn logprob(&self, context: &str, continuation: &str) -> anyhow::Result<f64>;
}

/// What plugins may use when they are built.
#[derive(Clone)]
pub struct PluginContext {
    pub embedder: Arc<dyn Embedder>,
    /// Present when a generator is loaded (needed by the `llm` reranker).
    pub scorer: Option<Arc<dyn Scorer>>,
}

#[async_trait]
pub trait Reranker: Send + Sync {
    /// Returns the hits to keep, best first.
    async fn rerank(&self, question: &str, hits: Vec<Hit>) -> anyhow::Result<Vec<Hit>>;
}

/// One step of a bot's reranking chain (`type:` in YAML).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RerankerConfig {
    /// Drop hits whose cosine similarity (or score, where none is known) is below `min_score`.
    Threshold { min_score: f32 },
    /// Maximal marginal relevance: trade relevance against repeating what was already picked.
    Mmr {
        /// 1.0 = pure relevance, 0.0 = pure diversity.
        #[serde(default = "default_lambda")]
        lambda: f32,
    },
    /// The generator judges relevance: passages are ordered by how likely the model finds
    /// the question after reading each one (query likelihood). Costs one prompt-sized
    /// forward pass per candidate.
    Llm {
        /// How many of the best candidates to rescore; the rest keep their order after them.
        #[serde(default = "default_llm_candidates")]
        candidates: usize,
    },
}

fn default_llm_candidates() -> usize {
    8
}

fn default_lambda() -> f32 {
    0.7
}

impl RerankerConfig {
    pub fn build(&self, cx: &PluginContext) -> anyhow::Result<Arc<dyn Reranker>> {
        Ok(match *self {
            Self::Threshold { min_score } => Arc::new(Threshold { min_score }),
            Self::Mmr { lambda } => Arc::new(Mmr { lambda, embedder: cx.embedder.clone() }),
            Self::Llm { candidates } => Arc::new(LlmReranker {
                candidates,
                scorer: cx.scorer.clone().ok_or_else(|| anyhow::anyhow!("the llm reranker needs the generator"))?,
            }),
        })
    }
}

pub struct Threshold {
    min_score: f32,
}

#[async_trait]
impl Reranker for Threshold {
    async fn rerank(&self, _question: &str, mut hits: Vec<Hit>) -> anyhow::Result<Vec<Hit>> {
        hits.retain(|h| h.similarity.unwrap_or(h.score) >= self.min_score);
        Ok(hits)
    }
}

pub struct Mmr {
    lambda: f32,
    embedder: Arc<dyn Embedder>,
}

#[async_trait]
impl Reranker for Mmr {
    async fn rerank(&self, question: &str, hits: Vec<Hit>) -> anyhow::Result<Vec<Hit>> {
        if hits.len() < 2 {
            return Ok(hits);
        }
        let mut texts = vec![question.to_string()];
        texts.extend(hits.iter().map(|h| h.chunk.text.clone()));
        let vectors = self.embedder.embed(&texts).await?;
        let (q, docs) = vectors.split_first().expect("question vector");
        let relevance: Vec<f32> = docs.iter().map(|d| cosine(q, d)).collect();
        let mut left: Vec<usize> = (0..hits.len()).collect();
        let mut picked: Vec<usize> = Vec::with_capacity(hits.len());
        while !left.is_empty() {
            let score = |i: usize| {
                let redundancy = picked.iter().map(|&j| cosine(&docs[i], &docs[j])).fold(f32::MIN, f32::max);
                let redundancy = if picked.is_empty() { 0.0 } else { redundancy };
                self.lambda * relevance[i] - (1.0 - self.lambda) * redundancy
            };
            let (pos, _) = left
                .iter()
                .enumerate()
                .map(|(pos, &i)| (pos, score(i)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .expect("non-empty");
            picked.push(left.remove(pos));
        }
        let mut hits: Vec<Option<Hit>> = hits.into_iter().map(Some).collect();
        Ok(picked.into_iter().filter_map(|i| hits[i].take()).collect())
    }
}

pub struct LlmReranker {
    candidates: usize,
    scorer: Arc<dyn Scorer>,
}

/// The query-likelihood prompt (Sachan et al., "Improving Passage Retrieval with Zero-Shot
/// Question Generation", 2022): a passage that answers a question makes it likely.
pub fn question_likelihood_context(passage: &str) -> String {
    format!("Passage: {}\nPlease write a question based on this passage.\nQuestion:", passage.trim())
}

#[async_trait]
impl Reranker for LlmReranker {
    async fn rerank(&self, question: &str, mut hits: Vec<Hit>) -> anyhow::Result<Vec<Hit>> {
        let n = self.candidates.min(hits.len());
        if n < 2 || question.trim().is_empty() {
            return Ok(hits);
        }
        let rest = hits.split_off(n);
        let continuation = format!(" {}", question.trim());
        // Scored concurrently: the engine batches them together.
        let contexts: Vec<String> = hits.iter().map(|h| question_likelihood_context(&h.chunk.text)).collect();
        let scores =
            futures::future::try_join_all(contexts.iter().map(|c| self.scorer.logprob(c, &continuation))).await?;
        for (h, s) in hits.iter_mut().zip(scores) {
            h.score = s as f32;
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.extend(rest);
        Ok(hits)
    }
}
