//! Cross-encoder reranking through llama.cpp: a reranker GGUF (bge-reranker and the like)
//! reads a (question, passage) pair and llama.cpp's rank pooling gives one relevance score.

use std::sync::{mpsc as std_mpsc, Arc};

use async_trait::async_trait;
use llama_cpp_2::context::params::LlamaPoolingType;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{load_model, thread_count, EngineError, Job};
use crate::settings::EmbedderConfig;

type Pairs = (String, Vec<String>, oneshot::Sender<anyhow::Result<Vec<f32>>>);

/// A reranking model on its own thread. Cheap to clone.
#[derive(Clone)]
pub struct LlamaCrossEncoder {
    model: Arc<LlamaModel>,
    jobs: std_mpsc::Sender<Job<Pairs>>,
    /// Cancelled when the thread dies: nothing will be scored any more.
    died: CancellationToken,
    max_tokens: usize,
}

/// GGUF `pooling_type` of reranking models (llama.cpp's LLAMA_POOLING_TYPE_RANK).
const RANK_POOLING: &str = "4";

/// Pairs packed into one decode.
const MAX_SEQS: usize = 32;

impl LlamaCrossEncoder {
    pub fn load(cfg: &EmbedderConfig) -> Result<Self, EngineError> {
        let model = load_model(&cfg.path, cfg.gpu_layers)?;
        let arch = model.meta_val_str("general.architecture").unwrap_or_default();
        if model.meta_val_str(&format!("{arch}.pooling_type")).ok().as_deref() != Some(RANK_POOLING) {
            return Err(EngineError::NotAReranker { path: cfg.path.display().to_string() });
        }
        let max_tokens = (model.n_ctx_train() as usize).clamp(8, cfg.batch_tokens);
        let (tx, rx) = std_mpsc::channel::<Job<Pairs>>();
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let threads = thread_count(cfg.threads);
        let path = cfg.path.clone();
        let worker_model = model.clone();
        let died = CancellationToken::new();
        let worker_died = died.clone();
        std::thread::Builder::new()
            .name("lore-reranker".into())
            .spawn(move || {
                let params = super::encoder_params(LlamaPoolingType::Rank, max_tokens, MAX_SEQS, threads);
                let model = worker_model;
                let Some(mut ctx) = super::worker_context(&model, params, &path, &ready_tx) else { return };
                // After a panic the thread ends and drops `rx` (see embed.rs).
                let work = || {
                    while let Ok(job) = rx.recv() {
                        match job {
                            Job::Work((query, docs, reply)) => {
                                let _ = reply.send(score_all(&model, &mut ctx, &query, &docs, max_tokens));
                            }
                            Job::CrashForTests => panic!("crash requested by a test"),
                        }
                    }
                };
                if super::run_supervised("reranker", work).is_some() {
                    worker_died.cancel();
                }
            })
            .map_err(|e| EngineError::Backend(format!("cannot start the reranker thread: {e}")))?;
        ready_rx.recv().map_err(|_| EngineError::Stopped("reranker"))??;
        tracing::info!(model = %cfg.path.display(), "cross-encoder ready");
        Ok(Self { model, jobs: tx, died, max_tokens })
    }

    /// Fires if the reranker's thread dies: every waiting and new request fails with "the
    /// reranker has stopped", and the daemon exits, as for the generator.
    pub fn died(&self) -> CancellationToken {
        self.died.clone()
    }

    /// Makes the thread panic at its next job (tests).
    #[doc(hidden)]
    pub fn crash_for_tests(&self) {
        let _ = self.jobs.send(Job::CrashForTests);
    }

    /// The token ids the model reads for one pair (shows the layout; used by tests).
    pub fn pair_token_ids(&self, question: &str, passage: &str) -> Vec<i32> {
        pair_tokens(&self.model, question, passage, self.max_tokens).into_iter().map(|t| t.0).collect()
    }
}

/// The pair the way cross-encoders were trained on it. WordPiece (BERT) models read
/// `[CLS] q [SEP] d [SEP]`; others get llama.cpp's own reranking layout, BOS q EOS SEP d EOS
/// with each special token only where the vocabulary asks for it (XLM-RoBERTa, as in
/// bge-reranker: `<s> q </s></s> d </s>`). The passage is cut to fit, never the question.
fn pair_tokens(model: &LlamaModel, query: &str, doc: &str, max_tokens: usize) -> Vec<LlamaToken> {
    let vocab = model.vocab();
    let q = vocab.tokenize(query.as_bytes(), false, false);
    let d = vocab.tokenize(doc.as_bytes(), false, false);
    // (`vocab_type()` panics on WordPiece in llama-cpp-2 0.1.160; the GGUF key says it too.)
    let wordpiece = model.meta_val_str("tokenizer.ggml.model").is_ok_and(|m| m == "bert");
    let eos = if wordpiece || vocab.eos().0 < 0 { vocab.sep() } else { vocab.eos() };
    let (bos, add_eos, add_sep) = if wordpiece {
        (true, true, false)
    } else {
        (vocab.should_add_bos(), vocab.should_add_eos(), vocab.should_add_sep())
    };
    let specials = usize::from(bos) + 2 * usize::from(add_eos) + usize::from(add_sep);
    let room = max_tokens.saturating_sub(specials);
    let q_len = q.len().min(room);
    let d_len = d.len().min(room - q_len);
    let mut out = Vec::with_capacity(q_len + d_len + specials);
    if bos {
        out.push(vocab.bos());
    }
    out.extend_from_slice(&q[..q_len]);
    if add_eos {
        out.push(eos);
    }
    if add_sep {
        out.push(vocab.sep());
    }
    out.extend_from_slice(&d[..d_len]);
    if add_eos {
        out.push(eos);
    }
    out
}

fn score_all(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    query: &str,
    docs: &[String],
    max_tokens: usize,
) -> anyhow::Result<Vec<f32>> {
    let pairs: Vec<Vec<LlamaToken>> = docs.iter().map(|d| pair_tokens(model, query, d, max_tokens)).collect();
    super::pooled_outputs(ctx, &pairs, max_tokens, MAX_SEQS)?
        .into_iter()
        .map(|v| v.first().copied().ok_or_else(|| anyhow::anyhow!("the reranker returned no score")))
        .collect()
}

#[async_trait]
impl lore_core::PairScorer for LlamaCrossEncoder {
    async fn score_pairs(&self, query: &str, passages: &[String]) -> anyhow::Result<Vec<f32>> {
        if passages.is_empty() {
            return Ok(vec![]);
        }
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Work((query.to_string(), passages.to_vec(), tx)))
            .map_err(|_| anyhow::anyhow!("the reranker has stopped"))?;
        rx.await.map_err(|_| anyhow::anyhow!("the reranker has stopped"))?
    }
}
