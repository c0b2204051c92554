//! Rerankers: reorder or filter retrieved chunks before they reach the prompt.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use lore_core::cosine;

use crate::{Embedder, Hit, PairScorer, PluginContext, Reranker, Scorer};

/// One step of a bot's reranking chain (`type:` in YAML).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RerankerConfig {
    /// Drop hits whose cosine similarity to the question is below `min_score` (hits with
    /// none known are dropped too).
    Threshold {
        /// Lowest cosine similarity kept, from -1 to 1.
        min_score: f32,
    },
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
    /// A reranking model (`models.reranker`, e.g. a bge-reranker GGUF) reads the question
    /// with each passage and scores the pair.
    CrossEncoder {
        /// How many of the best candidates to rescore; the rest keep their order after them.
        #[serde(default = "default_cross_encoder_candidates")]
        candidates: usize,
    },
}

fn default_cross_encoder_candidates() -> usize {
    20
}

fn default_llm_candidates() -> usize {
    8
}

fn default_lambda() -> f32 {
    0.7
}

impl RerankerConfig {
    /// The name used in YAML (`type:`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Threshold { .. } => "threshold",
            Self::Mmr { .. } => "mmr",
            Self::Llm { .. } => "llm",
            Self::CrossEncoder { .. } => "cross-encoder",
        }
    }

    pub fn build(&self, cx: &PluginContext) -> anyhow::Result<Arc<dyn Reranker>> {
        Ok(match *self {
            Self::Threshold { min_score } => Arc::new(Threshold { min_score }),
            Self::Mmr { lambda } => Arc::new(Mmr { lambda, embedder: cx.embedder.clone() }),
            Self::Llm { candidates } => Arc::new(LlmReranker {
                candidates,
                scorer: cx.scorer.clone().ok_or_else(|| anyhow::anyhow!("the llm reranker needs the generator"))?,
            }),
            Self::CrossEncoder { candidates } => Arc::new(CrossEncoder {
                candidates,
                model: cx.cross_encoder.clone().ok_or_else(|| {
                    anyhow::anyhow!("the cross-encoder reranker needs a reranking model: set `models.reranker.path`")
                })?,
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
        hits.retain(|h| h.similarity.is_some_and(|s| s >= self.min_score));
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

/// The longest question the `llm` reranker scores (longer ones are cut).
const MAX_SCORED_QUESTION_CHARS: usize = 1000;

fn truncate_chars(s: &str, max: usize) -> &str {
    s.char_indices().nth(max).map_or(s, |(i, _)| &s[..i])
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

/// Rescores the first `candidates` hits with `score` (one score per hit, higher = better)
/// and sorts them; the rest keep their order after them. Blank questions change nothing.
async fn rescore_top<F, Fut>(
    question: &str,
    mut hits: Vec<Hit>,
    candidates: usize,
    score: F,
) -> anyhow::Result<Vec<Hit>>
where
    F: FnOnce(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Vec<f32>>>,
{
    let n = candidates.min(hits.len());
    if n < 2 || question.trim().is_empty() {
        return Ok(hits);
    }
    let rest = hits.split_off(n);
    let scores = score(hits.iter().map(|h| h.chunk.text.clone()).collect()).await?;
    anyhow::ensure!(scores.len() == hits.len(), "the reranker scored {} of {} passages", scores.len(), hits.len());
    for (h, s) in hits.iter_mut().zip(scores) {
        h.score = s;
    }
    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    hits.extend(rest);
    Ok(hits)
}

#[async_trait]
impl Reranker for LlmReranker {
    async fn rerank(&self, question: &str, hits: Vec<Hit>) -> anyhow::Result<Vec<Hit>> {
        // A question is a sentence or two; a pasted essay would not fit the generator's
        // context beside a passage, and its opening says what it is about.
        let continuation = format!(" {}", truncate_chars(question.trim(), MAX_SCORED_QUESTION_CHARS));
        rescore_top(question, hits, self.candidates, |passages| async move {
            // Scored concurrently: the engine batches them together.
            let contexts: Vec<String> = passages.iter().map(|p| question_likelihood_context(p)).collect();
            let scores =
                futures::future::try_join_all(contexts.iter().map(|c| self.scorer.logprob(c, &continuation))).await?;
            Ok(scores.into_iter().map(|s| s as f32).collect())
        })
        .await
    }
}

pub struct CrossEncoder {
    candidates: usize,
    model: Arc<dyn PairScorer>,
}

#[async_trait]
impl Reranker for CrossEncoder {
    async fn rerank(&self, question: &str, hits: Vec<Hit>) -> anyhow::Result<Vec<Hit>> {
        rescore_top(question, hits, self.candidates, |passages| async move {
            self.model.score_pairs(question.trim(), &passages).await
        })
        .await
    }
}
