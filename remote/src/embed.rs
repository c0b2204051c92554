//! Embeddings on a pool (`POST {endpoint}/embeddings`): texts go `batch_texts` to a
//! request, and the requests of one call run on all endpoints at once. Vectors are
//! normalised here, because Lore compares them by dot product and not every server
//! normalises.

use std::path::PathBuf;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use lore_core::Embedder;
use serde_json::{json, Value};

use crate::error::RemoteError;
use crate::pool::{EndpointState, Pool, PoolSettings, Route};
use crate::tokens::{CountedBy, Tokens};

#[derive(Debug, Clone)]
pub struct RemoteEmbedderSettings {
    pub pool: PoolSettings,
    /// The model name the servers know.
    pub model: String,
    /// Texts sent in one request.
    pub batch_texts: usize,
    /// Most tokens the model takes per text; chunks are cut to fit.
    pub max_tokens: usize,
    /// The model's `tokenizer.json`, for exact chunk sizes (else they are estimated).
    pub tokenizer: Option<PathBuf>,
}

/// An embedder on a pool of OpenAI-compatible servers. Cheap to clone.
#[derive(Clone)]
pub struct RemoteEmbedder {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Arc<Pool>,
    settings: RemoteEmbedderSettings,
    tokens: Tokens,
    dim: usize,
}

impl RemoteEmbedder {
    /// Starts using the pool and learns the vectors' length by embedding one text, so a
    /// server that is down or serves no such model is reported at start.
    pub async fn connect(settings: RemoteEmbedderSettings) -> Result<Self, RemoteError> {
        let tokens = Tokens::new(settings.tokenizer.as_deref(), false)?;
        let pool = Pool::start(settings.pool.clone())?;
        let probe = embed_batch(&pool, &settings.model, &["dimension probe".to_string()]).await?;
        let dim = probe
            .first()
            .map(Vec::len)
            .filter(|&d| d > 0)
            .ok_or_else(|| RemoteError::Malformed("the server returned an empty vector".into()))?;
        tracing::info!(model = %settings.model, dim, endpoints = pool.states().len(), "remote embedder ready");
        Ok(Self { inner: Arc::new(Inner { pool, settings, tokens, dim }) })
    }

    pub fn endpoints(&self) -> Vec<EndpointState> {
        self.inner.pool.states()
    }

    /// Each endpoint and whether it answers (`Err` says why not).
    pub async fn check_endpoints(&self) -> Vec<(String, Result<(), RemoteError>)> {
        self.inner.pool.check_all().await
    }

    pub fn counted_by(&self) -> CountedBy {
        self.inner.tokens.counted_by()
    }

    /// `text`, or as much of its start as fits in `max_tokens` (cut at a character).
    fn cut_to_fit(&self, text: &str) -> String {
        let fits = |t: &str| self.count_tokens(t) <= self.inner.settings.max_tokens;
        if fits(text) {
            return text.to_string();
        }
        let bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        let (mut lo, mut hi) = (0, bounds.len());
        while lo + 1 < hi {
            let mid = (lo + hi) / 2;
            if fits(&text[..bounds[mid]]) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        text[..bounds[lo]].to_string()
    }
}

#[async_trait::async_trait]
impl Embedder for RemoteEmbedder {
    fn dim(&self) -> usize {
        self.inner.dim
    }

    /// With the two special tokens BERT-style embedders add, as the trait counts.
    fn count_tokens(&self, text: &str) -> usize {
        self.inner.tokens.count_here(text) + 2
    }

    fn max_tokens(&self) -> usize {
        self.inner.settings.max_tokens
    }

    async fn embed(&self, texts: &[String]) -> anyhow::Result<Vec<Vec<f32>>> {
        let inner = &self.inner;
        // Owned batches and handles: the futures must not borrow from this call, which
        // `async_trait` cannot express for a stream of them.
        // Servers refuse a text longer than the model takes (vLLM 400, TEI 413); the local
        // embedder cuts such texts, and so does this one.
        let texts: Vec<String> = texts.iter().map(|t| self.cut_to_fit(t)).collect();
        let batches: Vec<_> = texts
            .chunks(inner.settings.batch_texts.max(1))
            .map(|batch| {
                let (pool, model, batch) = (inner.pool.clone(), inner.settings.model.clone(), batch.to_vec());
                async move { embed_batch(&pool, &model, &batch).await }
            })
            .collect();
        let batches: Vec<Vec<Vec<f32>>> =
            futures::stream::iter(batches).buffered(inner.pool.capacity()).try_collect().await?;
        let vectors: Vec<Vec<f32>> = batches.into_iter().flatten().collect();
        if let Some(bad) = vectors.iter().find(|v| v.len() != inner.dim) {
            let why = format!("the server returned a vector of {} numbers, earlier ones had {}", bad.len(), inner.dim);
            return Err(RemoteError::Malformed(why).into());
        }
        Ok(vectors)
    }
}

/// One request: a vector per text, in order, normalised.
async fn embed_batch(pool: &Pool, model: &str, texts: &[String]) -> Result<Vec<Vec<f32>>, RemoteError> {
    let body = json!({"model": model, "input": texts, "encoding_format": "float"});
    let answer = pool.post_json(Route::Api("embeddings"), &body).await?;
    let mut vectors = read_vectors(&answer).ok_or_else(|| {
        let start: String = answer.to_string().chars().take(200).collect();
        RemoteError::Malformed(format!("embeddings: unexpected answer {start}"))
    })?;
    if vectors.len() != texts.len() {
        return Err(RemoteError::Malformed(format!("embeddings: {} vectors for {} texts", vectors.len(), texts.len())));
    }
    for v in &mut vectors {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
    }
    Ok(vectors)
}

/// `data[i].embedding`, put in `data[i].index` order.
fn read_vectors(answer: &Value) -> Option<Vec<Vec<f32>>> {
    let mut items: Vec<(u64, Vec<f32>)> = answer["data"]
        .as_array()?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let index = item["index"].as_u64().unwrap_or(i as u64);
            let vector: Option<Vec<f32>> =
                item["embedding"].as_array()?.iter().map(|x| x.as_f64().map(|x| x as f32)).collect();
            Some((index, vector?))
        })
        .collect::<Option<_>>()?;
    items.sort_by_key(|(index, _)| *index);
    Some(items.into_iter().map(|(_, v)| v).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_come_back_in_the_order_of_their_index() {
        let answer = json!({"data": [
            {"index": 1, "embedding": [0.0, 2.0]},
            {"index": 0, "embedding": [1.0, 0.0]},
        ]});
        assert_eq!(read_vectors(&answer), Some(vec![vec![1.0, 0.0], vec![0.0, 2.0]]));
        assert_eq!(read_vectors(&json!({"data": [{"index": 0, "embedding": "AAAA"}]})), None);
    }
}
