//! Embeddings through llama.cpp: a BERT-family GGUF, mean pooling, unit-length vectors.

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

type Reply = oneshot::Sender<anyhow::Result<Vec<Vec<f32>>>>;

/// An embedding model on its own thread. Cheap to clone.
#[derive(Clone)]
pub struct LlamaEmbedder {
    model: Arc<LlamaModel>,
    jobs: std_mpsc::Sender<Job<(Vec<String>, Reply)>>,
    /// Cancelled when the thread dies: nothing will be embedded any more.
    died: CancellationToken,
    dim: usize,
    /// Most tokens one text may have; longer texts are cut (and chunking avoids that).
    max_tokens: usize,
    /// The languages its GGUF says it was trained on (`general.languages`).
    languages: Option<Vec<String>>,
}

impl LlamaEmbedder {
    pub fn load(cfg: &EmbedderConfig) -> Result<Self, EngineError> {
        let model = load_model(&cfg.path, cfg.gpu_layers)?;
        let dim = model.n_embd() as usize;
        // Non-causal models must see a whole text in one micro-batch.
        let max_tokens = (model.n_ctx_train() as usize).clamp(8, cfg.batch_tokens);
        let languages = crate::model_file::languages(&cfg.path);
        let (tx, rx) = std_mpsc::channel::<Job<(Vec<String>, Reply)>>();
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let died = CancellationToken::new();
        {
            let model = model.clone();
            let threads = thread_count(cfg.threads);
            let path = cfg.path.clone();
            let died = died.clone();
            std::thread::Builder::new()
                .name("lore-embedder".into())
                .spawn(move || {
                    let params = super::encoder_params(LlamaPoolingType::Mean, max_tokens, MAX_SEQS, threads);
                    let mut ctx = match super::worker_context(&model, params, &path, &ready_tx) {
                        Some(ctx) => ctx,
                        None => return,
                    };
                    // After a panic the thread ends, dropping `rx` and with it every waiting
                    // job's reply: their askers learn that the embedder stopped, and new jobs
                    // are refused.
                    let work = || {
                        while let Ok(job) = rx.recv() {
                            match job {
                                Job::Work((texts, reply)) => {
                                    let _ = reply.send(embed_all(&model, &mut ctx, &texts, max_tokens));
                                }
                                Job::CrashForTests => panic!("crash requested by a test"),
                            }
                        }
                    };
                    if super::run_supervised("embedder", work).is_some() {
                        died.cancel();
                    }
                })
                .map_err(|e| EngineError::Backend(format!("cannot start the embedder thread: {e}")))?;
        }
        ready_rx.recv().map_err(|_| EngineError::Stopped("embedder"))??;
        tracing::info!(model = %cfg.path.display(), dim, ?languages, "embedder ready");
        Ok(Self { model, jobs: tx, died, dim, max_tokens, languages })
    }

    /// The languages its GGUF says it was trained on; `None` when it does not say.
    pub fn languages(&self) -> Option<&[String]> {
        self.languages.as_deref()
    }

    /// Fires if the embedder's thread dies (a panic inside it): every waiting and new
    /// request fails with "the embedder has stopped". The daemon exits then, as for the
    /// generator.
    pub fn died(&self) -> CancellationToken {
        self.died.clone()
    }

    /// Makes the thread panic at its next job: the only way to test what a dead embedder
    /// does to the daemon.
    #[doc(hidden)]
    pub fn crash_for_tests(&self) {
        let _ = self.jobs.send(Job::CrashForTests);
    }
}

/// Sequences packed into one decode (llama.cpp allows up to 256).
const MAX_SEQS: usize = 64;

fn embed_all(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    texts: &[String],
    max_tokens: usize,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let vocab = model.vocab();
    let tokenized: Vec<Vec<LlamaToken>> = texts
        .iter()
        .map(|t| {
            let mut toks = vocab.tokenize(t.as_bytes(), true, false);
            if toks.len() > max_tokens {
                // Keep the closing [SEP]: BERT pools over a well-formed sequence.
                let last = *toks.last().expect("non-empty");
                toks.truncate(max_tokens - 1);
                toks.push(last);
            }
            toks
        })
        .collect();
    Ok(super::pooled_outputs(ctx, &tokenized, max_tokens, MAX_SEQS)?.iter().map(|v| normalise(v)).collect())
}

fn normalise(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 {
        v.to_vec()
    } else {
        v.iter().map(|x| x / norm).collect()
    }
}

#[async_trait]
impl lore_core::Embedder for LlamaEmbedder {
    fn dim(&self) -> usize {
        self.dim
    }

    fn count_tokens(&self, text: &str) -> usize {
        self.model.vocab().tokenize(text.as_bytes(), true, false).len()
    }

    fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    async fn embed(&self, texts: &[String]) -> anyhow::Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(vec![]);
        }
        let (tx, rx) = oneshot::channel();
        self.jobs.send(Job::Work((texts.to_vec(), tx))).map_err(|_| anyhow::anyhow!("the embedder has stopped"))?;
        rx.await.map_err(|_| anyhow::anyhow!("the embedder has stopped"))?
    }
}
