//! Retrievers: choose the chunks of a knowledge base that may answer a question.
//!
//! Every built-in fills each hit's cosine similarity to the question (the full-text one
//! embeds the question for that), so `min_score` means the same whichever is chosen.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use crate::{Embedder, Hit, KbHandle, Retriever};

/// Which retriever a bot or channel uses (`type:` in YAML).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RetrieverConfig {
    /// Dense search: cosine similarity of embeddings.
    Vector,
    /// Lexical search: BM25 over LanceDB's full-text index. Finds exact terms and names.
    Fulltext,
    /// Both, fused by weighted reciprocal rank.
    Hybrid {
        /// Weight of the vector ranking in the fusion.
        #[serde(default = "one")]
        vector_weight: f32,
        /// Weight of the full-text ranking in the fusion.
        #[serde(default = "one")]
        fulltext_weight: f32,
        /// The `k` of reciprocal-rank fusion: 1 / (k + rank). 60 is the usual choice.
        #[serde(default = "sixty")]
        rrf_k: f32,
        /// How many candidates each side contributes before fusion, as a multiple of top_k.
        #[serde(default = "two")]
        candidates_factor: usize,
    },
}

fn one() -> f32 {
    1.0
}
fn sixty() -> f32 {
    60.0
}
fn two() -> usize {
    2
}

impl Default for RetrieverConfig {
    fn default() -> Self {
        Self::Hybrid { vector_weight: 1.0, fulltext_weight: 1.0, rrf_k: 60.0, candidates_factor: 2 }
    }
}

/// How much a hybrid's vector ranking counts in a language its embedder was not trained
/// on, as a share of its configured weight: next to none, so full text orders the
/// passages it finds (at this share a vector rank cannot move one past another) and the
/// vector ranking only orders the places full text leaves empty. Fitted on the Hebrew
/// tuning questions with MiniLM (docs/EVAL.md, "Hebrew"), where every share tried above 0
/// (1, 0.5, 0.35, 0.25, 0.15, 0.1, 0.05) ranked the answer's passage first less often.
pub const UNTRAINED_VECTOR_SHARE: f32 = 0.001;

impl RetrieverConfig {
    /// This retriever for a knowledge base in a language its embedder was not trained on:
    /// a hybrid's vector ranking counts for [`UNTRAINED_VECTOR_SHARE`] of its weight (it
    /// still fills places full text leaves empty). `vector` and `fulltext` stay as chosen.
    pub fn leaning_on_full_text(&self) -> Self {
        match self.clone() {
            Self::Hybrid { vector_weight, fulltext_weight, rrf_k, candidates_factor } => Self::Hybrid {
                vector_weight: vector_weight * UNTRAINED_VECTOR_SHARE,
                fulltext_weight,
                rrf_k,
                candidates_factor,
            },
            other => other,
        }
    }

    /// The retriever for one knowledge base.
    pub fn build(&self, kb: KbHandle, embedder: Arc<dyn Embedder>) -> Arc<dyn Retriever> {
        let source = Source { kb, embedder };
        match *self {
            Self::Vector => Arc::new(VectorRetriever(source)),
            Self::Fulltext => Arc::new(FulltextRetriever(source)),
            Self::Hybrid { vector_weight, fulltext_weight, rrf_k, candidates_factor } => Arc::new(HybridRetriever {
                source,
                vector_weight,
                fulltext_weight,
                rrf_k,
                candidates_factor: candidates_factor.max(1),
            }),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Vector => "vector",
            Self::Fulltext => "fulltext",
            Self::Hybrid { .. } => "hybrid",
        }
    }
}

/// Where a retriever looks, and how it embeds the question.
struct Source {
    kb: KbHandle,
    embedder: Arc<dyn Embedder>,
}

impl Source {
    async fn embed(&self, question: &str) -> anyhow::Result<Vec<f32>> {
        Ok(self.embedder.embed(&[question.to_string()]).await?.remove(0))
    }
}

struct VectorRetriever(Source);

#[async_trait]
impl Retriever for VectorRetriever {
    async fn retrieve(&self, question: &str, k: usize) -> anyhow::Result<Vec<Hit>> {
        if k == 0 || question.trim().is_empty() {
            return Ok(vec![]);
        }
        let kb = self.0.kb.require().await?;
        Ok(kb.search_vector(&self.0.embed(question).await?, k).await?)
    }
}

struct FulltextRetriever(Source);

#[async_trait]
impl Retriever for FulltextRetriever {
    async fn retrieve(&self, question: &str, k: usize) -> anyhow::Result<Vec<Hit>> {
        if k == 0 || question.trim().is_empty() {
            return Ok(vec![]);
        }
        let kb = self.0.kb.require().await?;
        Ok(kb.search_fulltext(question, &self.0.embed(question).await?, k).await?)
    }
}

struct HybridRetriever {
    source: Source,
    vector_weight: f32,
    fulltext_weight: f32,
    rrf_k: f32,
    candidates_factor: usize,
}

#[async_trait]
impl Retriever for HybridRetriever {
    async fn retrieve(&self, question: &str, k: usize) -> anyhow::Result<Vec<Hit>> {
        if k == 0 || question.trim().is_empty() {
            return Ok(vec![]);
        }
        let kb = self.source.kb.require().await?;
        let vector = self.source.embed(question).await?;
        let n = k * self.candidates_factor;
        let (dense, lexical) =
            tokio::try_join!(kb.search_vector(&vector, n), kb.search_fulltext(question, &vector, n))?;
        Ok(fuse(&[(dense, self.vector_weight), (lexical, self.fulltext_weight)], self.rrf_k, k))
    }
}

/// Weighted reciprocal-rank fusion: score = sum of weight / (rrf_k + rank), rank from 1.
/// A chunk keeps the cosine similarity of whichever list knew it.
pub fn fuse(lists: &[(Vec<Hit>, f32)], rrf_k: f32, k: usize) -> Vec<Hit> {
    let mut fused: HashMap<String, Hit> = HashMap::new();
    for (hits, weight) in lists {
        for (rank, hit) in hits.iter().enumerate() {
            let add = weight / (rrf_k + rank as f32 + 1.0);
            let entry = fused.entry(hit.chunk.id.clone()).or_insert_with(|| Hit { score: 0.0, ..hit.clone() });
            entry.score += add;
            entry.similarity = entry.similarity.or(hit.similarity);
            entry.lexical = entry.lexical.or(hit.lexical);
        }
    }
    let mut out: Vec<Hit> = fused.into_values().collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.chunk.id.cmp(&b.chunk.id)));
    out.truncate(k);
    out
}
