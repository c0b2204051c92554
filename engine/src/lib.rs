//! Lore's models through llama.cpp: the only crate that knows `llama-cpp-2`.
//!
//! It knows nothing of knowledge bases (LanceDB), chat platforms or the YAML config file:
//! it implements `lore-core`'s traits — [`Generator`] (`ChatModel`, `Scorer`: a handle that
//! streams text for a prompt), [`LlamaEmbedder`] (`Embedder`) and [`LlamaCrossEncoder`]
//! (`PairScorer`) — from the settings in [`settings`]. Each owns one OS thread that owns
//! the llama.cpp context: contexts are not `Sync` and decoding blocks.

pub mod bench;
mod embed;
mod generate;
mod model_file;
mod rank;
mod sampling;
pub mod settings;
mod utf8;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;

pub use embed::LlamaEmbedder;
pub use generate::Generator;
pub use lore_core::{Event, Finish, GenerateError, GenerateRequest, Generated, Generation, Sampling, StopReason};
pub use model_file::{architecture, check as check_model_file, check_adapter as check_adapter_file, ModelFileError};
pub use rank::LlamaCrossEncoder;
pub use settings::{EmbedderConfig, GeneratorConfig};
pub use utf8::Utf8Stream;

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    ModelFile(#[from] ModelFileError),
    #[error("llama.cpp could not start: {0}")]
    Backend(String),
    #[error("llama.cpp could not load {path} (architecture `{arch}`): the file may be damaged, or this llama.cpp build does not support that architecture")]
    Load { path: String, arch: String },
    #[error("llama.cpp could not create a context for {path}: {reason}")]
    Context { path: String, reason: String },
    #[error("{path} is not a reranking model (its GGUF has no rank pooling): point `models.reranker.path` at a cross-encoder GGUF such as bge-reranker")]
    NotAReranker { path: String },
    #[error("llama.cpp refused the LoRA adapter {path} for {model}: its tensors do not match the model's (names or shapes: it was made for another model of the same family; llama.cpp's log says which tensor), or the file is damaged")]
    Adapter { path: String, model: String },
    #[error("{path} is a `{arch}` model, an encoder without a decoder: it cannot write answers. As `models.generator`, use a T5 model with its decoder (t5, flan-t5, mt5)")]
    NotAGenerator { path: String, arch: String },
    #[error("the {0} thread stopped before its model was ready")]
    Stopped(&'static str),
}

/// The process-wide llama.cpp backend (it may be initialised only once).
fn backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            // llama.cpp logs every tensor at load; route it through tracing (off by default).
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            #[cfg(feature = "dynamic-backends")]
            load_backend_modules();
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Backend(e.clone()))
}

/// With `dynamic-backends`, ggml's compute backends (CPU variants, CUDA, ...) are shared
/// libraries loaded at start: from `$LORE_BACKENDS_DIR`, else beside the executable, else
/// where the build put them. A `libggml-cuda.so` built elsewhere from the same llama.cpp
/// source can be dropped in beside the binary.
#[cfg(feature = "dynamic-backends")]
fn load_backend_modules() {
    let dir = std::env::var_os("LORE_BACKENDS_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)))
        .filter(|d| {
            std::fs::read_dir(d).is_ok_and(|mut it| {
                it.any(|f| f.is_ok_and(|f| f.file_name().to_string_lossy().starts_with("libggml-")))
            })
        });
    match dir {
        Some(dir) => llama_cpp_2::llama_backend::load_backends_from_path(&dir),
        None => llama_cpp_2::llama_backend::load_backends(),
    }
}

/// Loads a GGUF model after checking that llama.cpp can run its architecture.
fn load_model(path: &Path, gpu_layers: u32) -> Result<Arc<LlamaModel>, EngineError> {
    load_model_with_adapters(path, gpu_layers, &[]).map(|(model, _)| model)
}

/// Loads a GGUF model and LoRA adapters for it (llama.cpp loads an adapter into the model,
/// before any context exists). Each adapter is checked first, so a mismatch is told in
/// words rather than as llama.cpp's bare refusal.
fn load_model_with_adapters(
    path: &Path,
    gpu_layers: u32,
    adapters: &[std::path::PathBuf],
) -> Result<(Arc<LlamaModel>, Vec<llama_cpp_2::model::LlamaLoraAdapter>), EngineError> {
    let arch = model_file::check(path)?;
    for adapter in adapters {
        model_file::check_adapter(adapter, &arch)?;
    }
    let backend = backend()?;
    let params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers);
    let mut model = LlamaModel::load_from_file(backend, path, &params)
        .map_err(|_| EngineError::Load { path: path.display().to_string(), arch })?;
    let mut loaded = Vec::with_capacity(adapters.len());
    for adapter in adapters {
        let lora = model.lora_adapter_init(adapter).map_err(|_| EngineError::Adapter {
            path: adapter.display().to_string(),
            model: path.display().to_string(),
        })?;
        loaded.push(lora);
    }
    Ok((Arc::new(model), loaded))
}

/// Creates a context on the calling (worker) thread and tells the loader, waiting on
/// `ready`, whether that worked.
fn worker_context<'m>(
    model: &'m LlamaModel,
    params: llama_cpp_2::context::params::LlamaContextParams,
    path: &Path,
    ready: &std::sync::mpsc::Sender<Result<(), EngineError>>,
) -> Option<llama_cpp_2::context::LlamaContext<'m>> {
    let made = backend().and_then(|b| {
        model
            .new_context(b, params)
            .map_err(|e| EngineError::Context { path: path.display().to_string(), reason: e.to_string() })
    });
    match made {
        Ok(ctx) => {
            let _ = ready.send(Ok(()));
            Some(ctx)
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            None
        }
    }
}

/// Context settings for a non-causal encoder (embedder, reranker): a whole text in one
/// micro-batch, many texts per decode, pooled outputs.
fn encoder_params(
    pooling: llama_cpp_2::context::params::LlamaPoolingType,
    max_tokens: usize,
    max_seqs: usize,
    threads: i32,
) -> llama_cpp_2::context::params::LlamaContextParams {
    llama_cpp_2::context::params::LlamaContextParams::default()
        .with_embeddings(true)
        .with_pooling_type(pooling)
        .with_n_ctx(std::num::NonZeroU32::new(max_tokens as u32))
        .with_n_batch(max_tokens as u32)
        .with_n_ubatch(max_tokens as u32)
        .with_n_seq_max(max_seqs as u32)
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
}

/// Decodes whole token sequences packed into as few micro-batches as fit (`max_tokens`
/// tokens, `max_seqs` sequences each) and returns each sequence's pooled output, in order.
/// For non-causal models (embedders, rerankers), which must see a sequence in one batch.
fn pooled_outputs(
    ctx: &mut llama_cpp_2::context::LlamaContext<'_>,
    sequences: &[Vec<llama_cpp_2::token::LlamaToken>],
    max_tokens: usize,
    max_seqs: usize,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(sequences.len());
    let mut batch = llama_cpp_2::llama_batch::LlamaBatch::new(max_tokens, max_seqs as i32);
    let mut start = 0;
    while start < sequences.len() {
        let mut end = start;
        let mut used = 0;
        while end < sequences.len() && end - start < max_seqs && used + sequences[end].len() <= max_tokens {
            used += sequences[end].len();
            end += 1;
        }
        anyhow::ensure!(
            end > start,
            "a sequence of {} tokens exceeds the batch of {max_tokens}",
            sequences[start].len()
        );
        batch.clear();
        for (seq, toks) in sequences[start..end].iter().enumerate() {
            batch.add_sequence(toks, seq as i32, true)?;
        }
        ctx.clear_kv_cache();
        ctx.decode(&mut batch)?;
        for seq in 0..end - start {
            let v = ctx.embeddings_seq_ith(seq as i32).map_err(|_| anyhow::anyhow!("no output for sequence {seq}"))?;
            out.push(v.to_vec());
        }
        start = end;
    }
    Ok(out)
}

/// What a model thread (embedder, cross-encoder) is asked: work, or — in tests — to die
/// as a thread with a bug would.
enum Job<T> {
    Work(T),
    CrashForTests,
}

/// Runs a model thread's loop; when it panics, logs it and returns the panic's message
/// (the thread's owner then fails what was waiting and fires its `died` token).
fn run_supervised(thread: &str, work: impl FnOnce()) -> Option<String> {
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).err()?;
    let message = lore_core::panic_message(&*panic).to_string();
    tracing::error!(thread, %message, "a model thread died");
    Some(message)
}

/// Threads for llama.cpp: the configured count, else one per available core. llama.cpp's
/// own default (4) oversubscribes small machines and slows decoding several times.
pub fn thread_count(configured: Option<usize>) -> i32 {
    let n = configured.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    n.clamp(1, 512) as i32
}

/// Names of the compute devices llama.cpp can use (CPU, CUDA0, ...), for `lore check`.
pub fn devices() -> Vec<String> {
    if backend().is_err() {
        return vec![];
    }
    llama_cpp_2::list_llama_ggml_backend_devices()
        .into_iter()
        .map(|d| format!("{} ({})", d.name, d.description))
        .collect()
}
