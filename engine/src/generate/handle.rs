//! [`Generator`]: the async side's handle on the worker thread. It loads the model, reads
//! prompts into tokens, queues requests and hands back their event streams.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use llama_cpp_2::model::{LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use lore_core::{ChatModel, GenerateError, GenerateRequest, Generation, PromptText, Sampling};

use super::prompt::{self, tokenize_text};
use super::queue::{Job, Queue};
use super::schedule::LoraKey;
use super::worker::{self, Sizes};
use crate::settings::GeneratorConfig;
use crate::EngineError;

/// A handle on a loaded generator model. Cheap to clone; the worker thread stops when the
/// last handle is dropped.
#[derive(Clone)]
pub struct Generator {
    inner: Arc<Inner>,
}

struct Inner {
    model: Arc<LlamaModel>,
    queue: Arc<Queue>,
    path: PathBuf,
    arch: String,
    /// The LoRA adapters loaded with the model, in the order the worker holds them.
    adapters: Vec<PathBuf>,
    /// A text-to-text (encoder-decoder) model such as T5.
    encoder_decoder: bool,
    /// The languages its GGUF says it was trained on (`general.languages`).
    languages: Option<Vec<String>>,
    sizes: Sizes,
    max_queue: usize,
    kv_cache_bytes: u64,
    chat_template: Option<LlamaChatTemplate>,
    /// Cancelled when the worker thread dies: nothing will be generated any more.
    died: CancellationToken,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.queue.stop();
        if let Some(w) = self.worker.lock().ok().and_then(|mut w| w.take()) {
            let _ = w.join();
        }
    }
}

impl Generator {
    /// Loads the model and starts its worker thread.
    pub fn load(cfg: &GeneratorConfig) -> Result<Self, EngineError> {
        Self::load_with_adapters(cfg, &[])
    }

    /// Loads the model with LoRA adapters that requests may name ([`GenerateRequest::lora`]).
    pub fn load_with_adapters(cfg: &GeneratorConfig, adapters: &[PathBuf]) -> Result<Self, EngineError> {
        let path = cfg.path.clone();
        let arch = generator_architecture(&path)?;
        let encoder_decoder = arch == "t5";
        let languages = crate::model_file::languages(&path);
        let (model, loras) = crate::load_model_with_adapters(&path, cfg.gpu_layers, adapters)?;
        let sizes = Sizes::new(cfg, &model, encoder_decoder);
        let kv_cache_bytes = kv_cache_bytes(&model, sizes);
        let queue = Arc::new(Queue::new());
        let chat_template = prompt::usable_chat_template(&model);
        let died = CancellationToken::new();
        let worker = worker::start(worker::Start {
            model: model.clone(),
            adapters: loras,
            queue: queue.clone(),
            died: died.clone(),
            sizes,
            threads: crate::thread_count(cfg.threads),
            path: path.clone(),
            encoder_decoder,
        })?;
        tracing::info!(
            model = %path.display(),
            %arch,
            parallel = sizes.parallel,
            context_tokens = sizes.context_tokens,
            adapters = adapters.len(),
            chat_template = chat_template.is_some(),
            ?languages,
            "generator ready"
        );
        let inner = Inner {
            model,
            queue,
            path,
            arch,
            adapters: adapters.to_vec(),
            encoder_decoder,
            languages,
            sizes,
            max_queue: cfg.max_queue,
            kv_cache_bytes,
            chat_template,
            died,
            worker: Mutex::new(Some(worker)),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The GGUF architecture (`llama`, `gptneox`, `t5`, ...).
    pub fn architecture(&self) -> &str {
        &self.inner.arch
    }

    /// The languages its GGUF says it was trained on; `None` when it does not say.
    pub fn languages(&self) -> Option<&[String]> {
        self.inner.languages.as_deref()
    }

    /// A text-to-text model (T5 family): the prompt goes through an encoder, one
    /// conversation at a time.
    pub fn is_encoder_decoder(&self) -> bool {
        self.inner.encoder_decoder
    }

    fn prompt_tokens(&self, prompt: &PromptText) -> Vec<LlamaToken> {
        prompt::tokenize_prompt(&self.inner.model, prompt, self.inner.encoder_decoder)
    }

    pub fn parallel(&self) -> usize {
        self.inner.sizes.parallel
    }

    /// KV cache cells (one per token position) of all sequences together.
    pub fn kv_cells(&self) -> usize {
        self.inner.sizes.context_tokens * self.inner.sizes.parallel
    }

    /// KV cells holding tokens now: answers being generated and prompts kept for reuse.
    pub fn kv_cells_in_use(&self) -> usize {
        self.inner.queue.cells_in_use()
    }

    /// Fires if the worker thread dies (a panic inside it): every waiting and running
    /// generation has failed and new ones are refused. The daemon exits then, so that a
    /// service manager starts it afresh.
    pub fn died(&self) -> CancellationToken {
        self.inner.died.clone()
    }

    /// Makes the worker thread panic at its next step: the only way to test what a dead
    /// engine does to the daemon.
    #[doc(hidden)]
    pub fn crash_for_tests(&self) {
        self.inner.queue.crash_for_tests();
    }

    /// The token ids the model reads for `prompt` (for inspection and tests).
    pub fn tokens(&self, prompt: &PromptText) -> Vec<i32> {
        self.prompt_tokens(prompt).iter().map(|t| t.0).collect()
    }

    /// A prompt a client sent as token ids (OpenAI's `prompt` may be a list of them; another
    /// Lore with a `tokenizer` file sends its prompts so): control tokens become template
    /// parts, every other run of tokens the text it spells. A leading start token is dropped,
    /// as reading the prompt adds it. Ids outside the vocabulary are refused.
    pub fn prompt_from_token_ids(&self, ids: &[i64]) -> Result<PromptText, String> {
        prompt::prompt_from_token_ids(&self.inner.model, ids)
    }

    /// Size of the KV cache of all sequences together.
    pub fn kv_cache_bytes(&self) -> u64 {
        self.inner.kv_cache_bytes
    }

    pub fn has_chat_template(&self) -> bool {
        self.inner.chat_template.is_some()
    }

    /// Tokens `text` (ordinary text) takes in a prompt; synchronous, unlike
    /// [`ChatModel::count_tokens`], which every generator must offer async.
    pub fn count_text_tokens(&self, text: &str) -> usize {
        tokenize_text(&self.inner.model, text).len()
    }

    /// Mean log-probability the model gives `continuation` right after `context` (no
    /// sampling). Runs in the same batches as generations.
    pub async fn score(&self, context: &str, continuation: &str) -> Result<f64, GenerateError> {
        let mut tokens = tokenize_text(&self.inner.model, context);
        let from = tokens.len();
        tokens.extend(self.inner.model.vocab().tokenize(continuation.as_bytes(), false, false));
        if tokens.len() == from || from == 0 {
            return Ok(0.0);
        }
        let logprobs = self.score_tokens(tokens, from).await?;
        if logprobs.is_empty() {
            return Err(GenerateError::Failed("no continuation token was scored".into()));
        }
        Ok(logprobs.iter().sum::<f64>() / logprobs.len() as f64)
    }

    /// The log-probability of each of `tokens[from..]` after the tokens before it.
    async fn score_tokens(&self, tokens: Vec<LlamaToken>, from: usize) -> Result<Vec<f64>, GenerateError> {
        let request = GenerateRequest {
            prompt: PromptText::default(),
            max_tokens: 0,
            stop: vec![],
            ignore_eos: true,
            sampling: Sampling::greedy(),
            lora: None,
        };
        Ok(self.submit(tokens, Some(from), request)?.collect().await?.finish.token_logprobs)
    }

    /// Each token of `text` with the log-probability the model gives it after the ones
    /// before (`None` for a first token that has no context), as OpenAI's `echo` with
    /// `logprobs` reports a prompt. A beginning-of-text token the model adds is context,
    /// not listed. Runs in the same batches as generations.
    pub async fn prompt_logprobs(&self, text: &str) -> Result<Vec<(String, Option<f64>)>, GenerateError> {
        let tokens = tokenize_text(&self.inner.model, text);
        let vocab = self.inner.model.vocab();
        let has_bos = tokens.first().is_some_and(|&t| t == vocab.bos()) && !text.is_empty();
        let listed = if has_bos { &tokens[1..] } else { &tokens[..] };
        let mut pieces = Vec::with_capacity(listed.len());
        let mut bytes = Vec::new();
        for &token in listed {
            bytes.clear();
            vocab.token_to_piece_into(token, &mut bytes, false, None);
            pieces.push(String::from_utf8_lossy(&bytes).into_owned());
        }
        let mut logprobs: Vec<Option<f64>> = Vec::with_capacity(pieces.len());
        if tokens.len() >= 2 {
            if !has_bos {
                logprobs.push(None);
            }
            logprobs.extend(self.score_tokens(tokens, 1).await?.into_iter().map(Some));
        }
        logprobs.resize(pieces.len(), None);
        Ok(pieces.into_iter().zip(logprobs).collect())
    }

    /// Drops the prompts that finished requests left in the cache, so the next requests
    /// start from an empty cache (benchmarks measure each test that way, like llama.cpp's
    /// tools with their fresh contexts). Takes effect before the next request starts.
    pub fn forget_cached_prompts(&self) {
        self.inner.queue.forget_cached_prompts();
    }

    /// Queues `tokens` for the worker: generated from, or scored from `score_from` on.
    fn submit(
        &self,
        tokens: Vec<LlamaToken>,
        score_from: Option<usize>,
        request: GenerateRequest,
    ) -> Result<Generation, GenerateError> {
        let context_tokens = self.inner.sizes.context_tokens;
        if tokens.len() + 1 > context_tokens {
            return Err(GenerateError::PromptTooLong { prompt: tokens.len(), limit: context_tokens });
        }
        let lora = self.adapter_set(&request)?;
        if score_from.is_some() && self.inner.encoder_decoder {
            return Err(GenerateError::Failed(format!(
                "{} is a text-to-text ({}) model: scoring prompts (the llm reranker, echo) needs a decoder-only generator; use the cross-encoder reranker",
                self.inner.path.display(),
                self.inner.arch
            )));
        }
        let (events, rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let span = tracing::Span::current();
        let job = Job { tokens, lora, score_from, request, events, cancel: cancel.clone(), span };
        self.inner.queue.push(job, self.inner.max_queue, self.inner.sizes.parallel)?;
        Ok(Generation::new(rx, cancel))
    }

    /// The loaded adapter and scale `request` names, checked.
    fn adapter_set(&self, request: &GenerateRequest) -> Result<LoraKey, GenerateError> {
        let Some(adapter) = &request.lora else { return Ok(None) };
        let index = self.inner.adapters.iter().position(|p| *p == adapter.path).ok_or_else(|| {
            GenerateError::Failed(format!("the LoRA adapter {} was not loaded", adapter.path.display()))
        })?;
        if !adapter.has_valid_scale() {
            return Err(GenerateError::Failed(format!(
                "the LoRA adapter {}: scale {} must be a number from 0 up",
                adapter.path.display(),
                adapter.scale
            )));
        }
        Ok(Some((index, adapter.scale)))
    }
}

/// The GGUF's architecture, refused when it cannot write answers (an encoder alone).
fn generator_architecture(path: &Path) -> Result<String, EngineError> {
    let arch = crate::architecture(path)?;
    if arch == "t5encoder" {
        return Err(EngineError::NotAGenerator { path: path.display().to_string(), arch });
    }
    Ok(arch)
}

/// F16 K and V for every layer and cell (llama.cpp's default cache type).
fn kv_cache_bytes(model: &LlamaModel, sizes: Sizes) -> u64 {
    let head_dim = model.n_embd() as u64 / model.n_head().max(1) as u64;
    2 * 2
        * model.n_layer() as u64
        * head_dim
        * model.n_head_kv() as u64
        * (sizes.context_tokens * sizes.parallel) as u64
}

/// Runs `work` on tokio's blocking pool: tokenising is CPU work (a long prompt or a long
/// question takes milliseconds), and the async workers it would otherwise hold serve every
/// bot, the HTTP server and the line.
async fn off_the_async_workers<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

#[async_trait::async_trait]
impl ChatModel for Generator {
    fn context_tokens(&self) -> usize {
        self.inner.sizes.context_tokens
    }

    async fn count_tokens(&self, text: &str) -> usize {
        let (generator, text) = (self.clone(), text.to_string());
        off_the_async_workers(move || generator.count_text_tokens(&text)).await
    }

    async fn count_prompt_tokens(&self, prompt: &PromptText) -> usize {
        let (generator, prompt) = (self.clone(), prompt.clone());
        off_the_async_workers(move || generator.prompt_tokens(&prompt).len()).await
    }

    /// The template is rendered around placeholders, then each placeholder is replaced
    /// by its content as [`lore_core::Part::Text`]: only the template's own markers are
    /// special.
    fn render_chat(&self, messages: &[(&str, &str)]) -> Option<PromptText> {
        prompt::render_chat(&self.inner.model, self.inner.chat_template.as_ref()?, messages)
    }

    /// Events arrive as the worker produces them; drop the generation (or call `cancel`)
    /// to stop.
    fn generate(&self, request: GenerateRequest) -> Result<Generation, GenerateError> {
        let tokens = self.prompt_tokens(&request.prompt);
        self.submit(tokens, None, request)
    }

    /// Scored in the same batches as generations; the prompt's cells kept from its own
    /// generation are reused, so after answering only the answer's tokens are decoded.
    async fn continuation_logprob(&self, prompt: &PromptText, continuation: &str) -> anyhow::Result<Option<f64>> {
        if self.inner.encoder_decoder {
            return Ok(None);
        }
        let mut tokens = self.prompt_tokens(prompt);
        let from = tokens.len();
        tokens.extend(self.inner.model.vocab().tokenize(continuation.as_bytes(), false, false));
        if tokens.len() == from || from == 0 {
            return Ok(None);
        }
        let logprobs = self.score_tokens(tokens, from).await?;
        Ok((!logprobs.is_empty()).then(|| logprobs.iter().sum::<f64>() / logprobs.len() as f64))
    }
}

#[async_trait::async_trait]
impl lore_core::Scorer for Generator {
    async fn logprob(&self, context: &str, continuation: &str) -> anyhow::Result<f64> {
        Ok(self.score(context, continuation).await?)
    }
}
