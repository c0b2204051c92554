//! Text generation with continuous batching.
//!
//! One worker thread owns the model's context. Up to `parallel` requests are active at once,
//! each in its own sequence of one unified KV cache. Every step decodes ONE batch that holds
//! the next token of every generating sequence plus a chunk of the prompt of sequences
//! still reading theirs (chunked prefill), like llama.cpp's own server: a new question never
//! waits for another conversation's answer to finish.
//!
//! LoRA adapters apply to the whole context, so a step decodes only sequences that share
//! one adapter set (none, or one adapter at one scale), as llama.cpp's server batches by
//! adapter set: bots with different adapters take turns of a few steps, the set whose
//! sequences have waited longest next.
//!
//! Text-to-text models (T5, Flan-T5, mT5: encoder-decoder) read the prompt through the
//! encoder once, then decode the answer from the decoder start token. llama.cpp keeps one
//! encoder output for the whole context (a second prompt's encoding would replace the
//! first's), so they run one conversation at a time: `parallel` is 1 for them.
//!
//! A finished sequence keeps its prompt in the cache. A new request goes to the free
//! sequence whose kept prompt shares the longest prefix with its own (the system prompt,
//! a follow-up's earlier turns) and decodes only the rest, as llama.cpp's server does.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaChatMessage, LlamaLoraAdapter, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::DecodeError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use lore_core::{
    ChatModel, Event, Finish, GenerateError, GenerateRequest, Generation, Part, PromptText, Sampling, StopReason,
};

use super::{load_model_with_adapters, thread_count, EngineError, Utf8Stream};
use crate::sampling::TokenChooser;
use crate::settings::GeneratorConfig;

/// The adapter set a sequence is decoded with: an index into the loaded adapters and its
/// scale, or `None` for the base model.
type LoraKey = Option<(usize, f32)>;

struct Job {
    tokens: Vec<LlamaToken>,
    lora: LoraKey,
    /// Scoring instead of generating: tokens from this index on are scored, none generated.
    score_from: Option<usize>,
    request: GenerateRequest,
    events: mpsc::UnboundedSender<Event>,
    cancel: CancellationToken,
    /// The span of whoever asked (a question's): the worker writes this job's lines in it.
    span: tracing::Span,
}

struct Queue {
    jobs: Mutex<QueueState>,
    wake: Condvar,
    /// KV cells holding tokens after the worker's last step (running and kept prompts).
    cells_in_use: std::sync::atomic::AtomicUsize,
}

struct QueueState {
    waiting: VecDeque<Job>,
    /// Sequences currently in use by the worker.
    active: usize,
    /// Drop the prompts free sequences keep for reuse (see `Generator::forget_cached_prompts`).
    forget: bool,
    shutdown: bool,
    /// A test asked the worker to panic ([`Generator::crash_for_tests`]).
    crash: bool,
}

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
    parallel: usize,
    context_tokens: usize,
    max_queue: usize,
    kv_cache_bytes: u64,
    chat_template: Option<llama_cpp_2::model::LlamaChatTemplate>,
    /// Cancelled when the worker thread dies: nothing will be generated any more.
    died: CancellationToken,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut q) = self.queue.jobs.lock() {
            q.shutdown = true;
        }
        self.queue.wake.notify_all();
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
        let arch = super::architecture(&path)?;
        if arch == "t5encoder" {
            return Err(EngineError::NotAGenerator { path: path.display().to_string(), arch });
        }
        let encoder_decoder = arch == "t5";
        let (model, loras) = load_model_with_adapters(&path, cfg.gpu_layers, adapters)?;
        // One encoder output per context: see the module's comment.
        let parallel = if encoder_decoder { 1 } else { cfg.parallel.max(1) };
        let train_ctx = model.n_ctx_train() as usize;
        let context_tokens = if train_ctx > 0 { cfg.context_tokens.min(train_ctx) } else { cfg.context_tokens };
        // F16 K and V for every layer and cell (llama.cpp's default cache type).
        let head_dim = model.n_embd() as u64 / model.n_head().max(1) as u64;
        let kv_cache_bytes =
            2 * 2 * model.n_layer() as u64 * head_dim * model.n_head_kv() as u64 * (context_tokens * parallel) as u64;
        let queue = Arc::new(Queue {
            jobs: Mutex::new(QueueState {
                waiting: VecDeque::new(),
                active: 0,
                forget: false,
                shutdown: false,
                crash: false,
            }),
            wake: Condvar::new(),
            cells_in_use: std::sync::atomic::AtomicUsize::new(0),
        });
        let chat_template = model
            .chat_template(None)
            .ok()
            // A template llama.cpp cannot apply is as good as none: use the plain prompt.
            .filter(|t| {
                let probe = [LlamaChatMessage::new("user".into(), "hi".into()).expect("no NUL")];
                model.apply_chat_template(t, &probe, true).is_ok()
            });

        // The worker builds the context itself (it borrows the model) and reports back.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let died = CancellationToken::new();
        let worker = {
            let model = model.clone();
            let queue = queue.clone();
            let died = died.clone();
            let threads = thread_count(cfg.threads);
            // llama.cpp encodes a prompt in one micro-batch (and aborts if it does not fit).
            let batch_tokens = if encoder_decoder { cfg.batch_tokens.max(context_tokens) } else { cfg.batch_tokens };
            let path = path.clone();
            std::thread::Builder::new()
                .name("lore-generator".into())
                .spawn(move || {
                    let params = LlamaContextParams::default()
                        .with_n_ctx(std::num::NonZeroU32::new((context_tokens * parallel) as u32))
                        .with_n_batch(batch_tokens as u32)
                        .with_n_ubatch(batch_tokens as u32)
                        .with_n_seq_max(parallel as u32)
                        .with_kv_unified(true)
                        .with_n_threads(threads)
                        .with_n_threads_batch(threads);
                    let ctx = match super::worker_context(&model, params, &path, &ready_tx) {
                        Some(ctx) => ctx,
                        None => return,
                    };
                    let mut worker = Worker::new(&model, ctx, queue.clone(), parallel, context_tokens, batch_tokens);
                    worker.adapters = loras;
                    if encoder_decoder {
                        worker.decoder_start = Some(decoder_start(&model));
                    }
                    if let Some(message) = super::run_supervised("generator", || worker.run()) {
                        fail_everything_waiting(&queue, &message);
                        died.cancel();
                    }
                })
                .map_err(|e| EngineError::Backend(format!("cannot start the generator thread: {e}")))?
        };
        ready_rx.recv().map_err(|_| EngineError::Stopped("generator"))??;
        tracing::info!(model = %path.display(), %arch, parallel, context_tokens, adapters = adapters.len(), chat_template = chat_template.is_some(), "generator ready");
        Ok(Self {
            inner: Arc::new(Inner {
                model,
                queue,
                path,
                arch,
                adapters: adapters.to_vec(),
                encoder_decoder,
                parallel,
                context_tokens,
                max_queue: cfg.max_queue,
                kv_cache_bytes,
                chat_template,
                died,
                worker: Mutex::new(Some(worker)),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The GGUF architecture (`llama`, `gptneox`, `t5`, ...).
    pub fn architecture(&self) -> &str {
        &self.inner.arch
    }

    /// A text-to-text model (T5 family): the prompt goes through an encoder, one
    /// conversation at a time.
    pub fn is_encoder_decoder(&self) -> bool {
        self.inner.encoder_decoder
    }

    /// The tokens `prompt` is read as: a decoder-only model gets its start token first; an
    /// encoder reads the whole prompt followed by its end-of-text token, as it was trained.
    fn prompt_tokens(&self, prompt: &PromptText) -> Vec<LlamaToken> {
        if !self.inner.encoder_decoder {
            return tokenize_prompt(&self.inner.model, prompt);
        }
        let vocab = self.inner.model.vocab();
        let mut tokens: Vec<LlamaToken> = prompt
            .parts()
            .iter()
            .flat_map(|part| vocab.tokenize(part.as_str().as_bytes(), false, matches!(part, Part::Template(_))))
            .collect();
        tokens.push(vocab.eos());
        tokens
    }

    pub fn parallel(&self) -> usize {
        self.inner.parallel
    }

    /// KV cache cells (one per token position) of all sequences together.
    pub fn kv_cells(&self) -> usize {
        self.inner.context_tokens * self.inner.parallel
    }

    /// KV cells holding tokens now: answers being generated and prompts kept for reuse.
    pub fn kv_cells_in_use(&self) -> usize {
        self.inner.queue.cells_in_use.load(std::sync::atomic::Ordering::Relaxed)
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
        if let Ok(mut q) = self.inner.queue.jobs.lock() {
            q.crash = true;
        }
        self.inner.queue.wake.notify_all();
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
        let vocab = self.inner.model.vocab();
        let size = vocab.n_tokens();
        let mut tokens = Vec::with_capacity(ids.len());
        for &id in ids {
            match i32::try_from(id) {
                Ok(id) if (0..size).contains(&id) => tokens.push(LlamaToken(id)),
                _ => return Err(format!("token id {id} is not in the model's vocabulary of {size}")),
            }
        }
        if tokens.first() == Some(&vocab.bos()) && vocab.should_add_bos() {
            tokens.remove(0);
        }
        let mut prompt = PromptText::default();
        let mut text = Vec::new();
        for token in tokens {
            if vocab.is_control(token) {
                prompt.push_text(String::from_utf8_lossy(&std::mem::take(&mut text)));
                prompt.push_template(String::from_utf8_lossy(&vocab.token_to_piece(token, true, None)));
            } else {
                vocab.token_to_piece_into(token, &mut text, false, None);
            }
        }
        prompt.push_text(String::from_utf8_lossy(&text));
        Ok(prompt)
    }

    /// Size of the KV cache of all sequences together.
    pub fn kv_cache_bytes(&self) -> u64 {
        self.inner.kv_cache_bytes
    }

    pub fn has_chat_template(&self) -> bool {
        self.inner.chat_template.is_some()
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
        if let Ok(mut q) = self.inner.queue.jobs.lock() {
            q.forget = true;
        }
        self.inner.queue.wake.notify_all();
    }

    fn submit(
        &self,
        tokens: Vec<LlamaToken>,
        score_from: Option<usize>,
        request: GenerateRequest,
    ) -> Result<Generation, GenerateError> {
        if tokens.len() + 1 > self.inner.context_tokens {
            return Err(GenerateError::PromptTooLong { prompt: tokens.len(), limit: self.inner.context_tokens });
        }
        let lora = match &request.lora {
            None => None,
            Some(adapter) => {
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
                Some((index, adapter.scale))
            }
        };
        if score_from.is_some() && self.inner.encoder_decoder {
            return Err(GenerateError::Failed(format!(
                "{} is a text-to-text ({}) model: scoring prompts (the llm reranker, echo) needs a decoder-only generator; use the cross-encoder reranker",
                self.inner.path.display(),
                self.inner.arch
            )));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let mut q = self.inner.queue.jobs.lock().map_err(|_| GenerateError::Stopped)?;
        if q.shutdown {
            return Err(GenerateError::Stopped);
        }
        if q.waiting.len() >= self.inner.max_queue {
            return Err(GenerateError::QueueFull(q.waiting.len()));
        }
        let busy = q.active + q.waiting.len() >= self.inner.parallel;
        let span = tracing::Span::current();
        q.waiting.push_back(Job {
            tokens,
            lora,
            score_from,
            request,
            events: tx.clone(),
            cancel: cancel.clone(),
            span,
        });
        if busy {
            let _ = tx.send(Event::Queued { position: q.waiting.len() });
        }
        drop(q);
        self.inner.queue.wake.notify_all();
        Ok(Generation::new(rx, cancel))
    }
}

impl Generator {
    /// Tokens `text` (ordinary text) takes in a prompt; synchronous, unlike
    /// [`ChatModel::count_tokens`], which every generator must offer async.
    pub fn count_text_tokens(&self, text: &str) -> usize {
        tokenize_text(&self.inner.model, text).len()
    }
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
        self.inner.context_tokens
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
    /// by its content as [`Part::Text`]: only the template's own markers are special.
    fn render_chat(&self, messages: &[(&str, &str)]) -> Option<PromptText> {
        let template = self.inner.chat_template.as_ref()?;
        let msgs: Vec<LlamaChatMessage> = messages
            .iter()
            .enumerate()
            .map(|(i, (role, _))| LlamaChatMessage::new(role.to_string(), placeholder(i)).expect("no NUL"))
            .collect();
        let rendered = self.inner.model.apply_chat_template(template, &msgs, true).ok()?;
        let mut prompt = PromptText::default();
        let mut rest = rendered.as_str();
        while let Some(start) = rest.find(PLACEHOLDER_OPEN) {
            let end = start + rest[start..].find(PLACEHOLDER_CLOSE)?;
            let index: usize = rest[start + PLACEHOLDER_OPEN.len_utf8()..end].parse().ok()?;
            prompt.push_template(&rest[..start]);
            prompt.push_text(messages.get(index)?.1.replace(['\0', PLACEHOLDER_OPEN, PLACEHOLDER_CLOSE], ""));
            rest = &rest[end + PLACEHOLDER_CLOSE.len_utf8()..];
        }
        prompt.push_template(rest);
        Some(prompt)
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

/// Marks where message `i` goes while a chat template is rendered (private-use
/// characters, removed from contents, so no text can fake one).
const PLACEHOLDER_OPEN: char = '\u{F8F0}';
const PLACEHOLDER_CLOSE: char = '\u{F8F1}';

fn placeholder(i: usize) -> String {
    format!("{PLACEHOLDER_OPEN}{i}{PLACEHOLDER_CLOSE}")
}

/// Where an encoder-decoder model's decoder starts: the token the file names, else its
/// start-of-text token, else 0 (T5's pad token, which T5 starts from).
fn decoder_start(model: &LlamaModel) -> LlamaToken {
    [model.decode_start_token(), model.vocab().bos()].into_iter().find(|t| t.0 >= 0).unwrap_or(LlamaToken(0))
}

/// Ordinary text as a prompt of its own (with the model's start token): control-token
/// spellings in it stay ordinary text.
fn tokenize_text(model: &LlamaModel, text: &str) -> Vec<LlamaToken> {
    model.vocab().tokenize(text.as_bytes(), true, false)
}

/// A prompt piece by piece: control tokens are parsed in the template's text only.
fn tokenize_prompt(model: &LlamaModel, prompt: &PromptText) -> Vec<LlamaToken> {
    let mut tokens = Vec::new();
    for (i, part) in prompt.parts().iter().enumerate() {
        let special = matches!(part, Part::Template(_));
        tokens.extend(model.vocab().tokenize(part.as_str().as_bytes(), i == 0, special));
    }
    tokens
}

/// After the worker died: refuse new jobs and fail every waiting one in words. (Running
/// ones died with the worker: their event channels closed.)
fn fail_everything_waiting(queue: &Queue, message: &str) {
    let mut q = queue.jobs.lock().unwrap_or_else(|e| e.into_inner());
    q.shutdown = true;
    for job in q.waiting.drain(..) {
        let _ = job.events.send(Event::Failed(format!("the generator stopped: {message}")));
    }
}

/// A request being served in one sequence of the context.
struct Active {
    seq: i32,
    /// Admission order (higher = admitted later): a full cache fails the newest request.
    admitted: u64,
    /// The step that last decoded this sequence: the adapter set waiting longest goes next.
    last_step: u64,
    job: Job,
    /// Prompt tokens already in the KV cache.
    prefilled: usize,
    /// Of those, how many an earlier request left there.
    reused: usize,
    /// Position of the next token in this sequence.
    n_past: usize,
    /// Token sampled last, to be decoded next.
    next: Option<LlamaToken>,
    /// Index in the current batch whose logits belong to this sequence.
    logits_at: Option<i32>,
    /// Scoring: batch indices whose logits predict a scored token, and that token.
    score_at: Vec<(i32, LlamaToken)>,
    logprobs: Vec<f64>,
    generated: usize,
    chooser: TokenChooser,
    utf8: Utf8Stream,
    /// Text produced but not yet sent because it might be the start of a stop string.
    held: String,
    piece: Vec<u8>,
}

/// Steps one adapter set decodes in a row while sequences of another wait: a turn of a
/// few tokens each keeps both answers streaming, and switching less often spares
/// llama.cpp rebuilding its compute graphs for every token.
const LORA_TURN_STEPS: usize = 8;

/// A shared prefix shorter than this is decoded again: reusing it saves too little to be
/// worth keeping a free sequence's tokens apart.
const MIN_REUSE_TOKENS: usize = 16;

struct Worker<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    queue: Arc<Queue>,
    slots: Vec<Option<Active>>,
    /// Per sequence: the prompt tokens its part of the KV cache holds while it is free,
    /// and the adapter set they were computed with.
    kept: Vec<Vec<LlamaToken>>,
    kept_lora: Vec<LoraKey>,
    adapters: Vec<LlamaLoraAdapter>,
    /// The adapter set the context applies now, and for how many steps in a row.
    applied: LoraKey,
    turn: usize,
    /// For an encoder-decoder model: the token its decoder starts from.
    decoder_start: Option<LlamaToken>,
    steps: u64,
    context_tokens: usize,
    batch: LlamaBatch<'static>,
    batch_tokens: usize,
    admissions: u64,
}

impl<'m> Worker<'m> {
    fn new(
        model: &'m LlamaModel,
        ctx: LlamaContext<'m>,
        queue: Arc<Queue>,
        parallel: usize,
        context_tokens: usize,
        batch_tokens: usize,
    ) -> Self {
        Self {
            model,
            ctx,
            queue,
            slots: (0..parallel).map(|_| None).collect(),
            kept: vec![Vec::new(); parallel],
            kept_lora: vec![None; parallel],
            adapters: Vec::new(),
            applied: None,
            turn: 0,
            decoder_start: None,
            steps: 0,
            context_tokens,
            batch: LlamaBatch::new(batch_tokens, parallel as i32),
            batch_tokens,
            admissions: 0,
        }
    }

    fn run(mut self) {
        while self.admit() {
            self.drop_cancelled();
            if self.slots.iter().all(Option::is_none) {
                continue;
            }
            self.step();
            let running: usize = self.slots.iter().flatten().map(|a| a.n_past).sum();
            let kept: usize = self.kept.iter().map(Vec::len).sum();
            self.queue.cells_in_use.store(running + kept, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Moves waiting jobs into free sequences. Blocks while there is nothing to do.
    /// Returns false when the worker should stop.
    fn admit(&mut self) -> bool {
        let queue = self.queue.clone();
        let mut q = match queue.jobs.lock() {
            Ok(q) => q,
            Err(_) => return false,
        };
        loop {
            if q.shutdown {
                return false;
            }
            if q.crash {
                panic!("crash requested by a test");
            }
            if q.forget {
                self.evict_kept();
                q.forget = false;
            }
            let idle = self.slots.iter().all(Option::is_none);
            if !(idle && q.waiting.is_empty()) {
                break;
            }
            q = match queue.wake.wait(q) {
                Ok(q) => q,
                Err(_) => return false,
            };
        }
        let mut admitted = false;
        while self.slots.iter().any(Option::is_none) {
            let Some(job) = q.waiting.pop_front() else { break };
            if job.cancel.is_cancelled() || job.events.is_closed() {
                continue;
            }
            let (seq, reused) = self.pick_sequence(&job);
            job.span.in_scope(|| {
                let (prompt_tokens, scoring) = (job.tokens.len(), job.score_from.is_some());
                tracing::debug!(seq, prompt_tokens, reused_tokens = reused, scoring, "generation started");
            });
            self.admissions += 1;
            self.slots[seq] = Some(Active {
                seq: seq as i32,
                admitted: self.admissions,
                last_step: 0,
                chooser: TokenChooser::new(self.model, &job.request.sampling),
                job,
                prefilled: reused,
                reused,
                n_past: reused,
                next: None,
                logits_at: None,
                score_at: Vec::new(),
                logprobs: Vec::new(),
                generated: 0,
                utf8: Utf8Stream::default(),
                held: String::new(),
                piece: Vec::with_capacity(32),
            });
            admitted = true;
        }
        q.active = self.slots.iter().filter(|s| s.is_some()).count();
        if admitted {
            // Everyone still waiting moved up.
            for (i, job) in q.waiting.iter().enumerate() {
                let _ = job.events.send(Event::Queued { position: i + 1 });
            }
        }
        true
    }

    /// The free sequence for `job` and how many of its prompt tokens are already cached
    /// there; the rest of that sequence's cache is dropped.
    fn pick_sequence(&mut self, job: &Job) -> (usize, usize) {
        // At least one prompt token is decoded (its logits start the answer); scoring
        // needs the logits from the token before the scored part.
        let limit = job.tokens.len().saturating_sub(1).min(job.score_from.map_or(usize::MAX, |f| f.saturating_sub(1)));
        // Cells computed under another adapter set hold other values.
        let common = |s: usize| match self.kept_lora[s] == job.lora {
            true => self.kept[s].iter().zip(&job.tokens).take_while(|(a, b)| a == b).count().min(limit),
            false => 0,
        };
        let free = (0..self.slots.len()).filter(|&s| self.slots[s].is_none());
        // Longest shared prefix first; among equals, the sequence keeping the least.
        let seq = free
            .max_by_key(|&s| (common(s), std::cmp::Reverse(self.kept[s].len())))
            .expect("called with a free sequence");
        let shared = common(seq);
        let reused = if shared >= MIN_REUSE_TOKENS { shared } else { 0 };
        if reused < self.kept[seq].len() {
            let _ = self.ctx.clear_kv_cache_seq(Some(seq as u32), Some(reused as u32), None);
        }
        self.kept[seq].clear();
        (seq, reused)
    }

    /// Drops what free sequences keep, to make room in the cache.
    fn evict_kept(&mut self) -> bool {
        let mut any = false;
        for seq in 0..self.slots.len() {
            if self.slots[seq].is_none() && !self.kept[seq].is_empty() {
                let _ = self.ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
                self.kept[seq].clear();
                any = true;
            }
        }
        any
    }

    fn drop_cancelled(&mut self) {
        for i in 0..self.slots.len() {
            let cancelled =
                self.slots[i].as_ref().is_some_and(|a| a.job.cancel.is_cancelled() || a.job.events.is_closed());
            if cancelled {
                self.finish(i, StopReason::Cancelled);
            }
        }
    }

    /// Decodes one batch: one token per generating sequence, then prompt chunks; then
    /// reads the logits of everyone who got some.
    fn step(&mut self) {
        self.steps += 1;
        let Some(lora) = self.adapter_set_for_step() else { return };
        if let Err(e) = self.apply(lora) {
            tracing::error!(error = %e, "setting the LoRA adapter failed");
            for i in 0..self.slots.len() {
                if self.slots[i].as_ref().is_some_and(|a| a.job.lora == lora) {
                    self.fail(i, &format!("setting the LoRA adapter failed: {e}"));
                }
            }
            return;
        }
        if let Some(start) = self.decoder_start {
            self.encode_prompts(start);
        }
        self.batch.clear();
        let before: Vec<Option<usize>> = self.slots.iter().map(|s| s.as_ref().map(|a| a.prefilled)).collect();
        let budget = self.add_next_tokens(self.batch_tokens, lora);
        self.add_prompt_chunks(budget, lora);
        if self.batch.n_tokens() == 0 {
            return;
        }
        match self.ctx.decode(&mut self.batch) {
            Ok(()) => self.read_logits(),
            Err(DecodeError::NoKvCacheSlot) => self.cache_full(&before),
            Err(e) => {
                tracing::error!(error = %e, "decode failed");
                for i in 0..self.slots.len() {
                    if self.slots[i].is_some() {
                        self.fail(i, &format!("decode failed: {e}"));
                    }
                }
            }
        }
    }

    /// Encoder-decoder models: runs the encoder over each new prompt, whole, and sets the
    /// sequence to decode from the decoder start token. Its logits are not read: the
    /// answer starts at the decoder.
    fn encode_prompts(&mut self, start: LlamaToken) {
        for i in 0..self.slots.len() {
            let Some(a) = self.slots[i].as_mut() else { continue };
            if a.next.is_some() || a.prefilled > 0 {
                continue;
            }
            self.batch.clear();
            let n = a.job.tokens.len();
            for (pos, &tok) in a.job.tokens.iter().enumerate() {
                self.batch.add(tok, pos as i32, &[a.seq], pos + 1 == n).expect("batch sized to the context");
            }
            match self.ctx.encode(&mut self.batch) {
                Ok(()) => {
                    a.prefilled = n;
                    a.n_past = 0;
                    a.next = Some(start);
                }
                Err(e) => self.fail(i, &format!("encoding the prompt failed: {e}")),
            }
        }
    }

    /// The adapter set this step decodes: the one applied now for up to [`LORA_TURN_STEPS`]
    /// steps while others wait (switching makes llama.cpp rebuild its compute graphs),
    /// then the set whose sequences have waited longest.
    fn adapter_set_for_step(&mut self) -> Option<LoraKey> {
        let active = || self.slots.iter().flatten();
        let current_has_work = active().any(|a| a.job.lora == self.applied);
        let others_wait = active().any(|a| a.job.lora != self.applied);
        if current_has_work && (!others_wait || self.turn < LORA_TURN_STEPS) {
            self.turn += 1;
            return Some(self.applied);
        }
        let next = active().filter(|a| a.job.lora != self.applied).min_by_key(|a| a.last_step)?.job.lora;
        self.turn = 1;
        Some(next)
    }

    /// Makes the context apply `lora` (nothing when it already does).
    fn apply(&mut self, lora: LoraKey) -> Result<(), String> {
        if self.applied == lora {
            return Ok(());
        }
        match lora {
            Some((index, scale)) => {
                self.ctx.lora_adapter_set(&mut self.adapters[index], scale).map_err(|e| e.to_string())?
            }
            // Clears every adapter (the argument is not used).
            None => self.ctx.lora_adapter_remove(&mut self.adapters[0]).map_err(|e| e.to_string())?,
        }
        self.applied = lora;
        Ok(())
    }

    /// Puts the next token of every generating sequence of adapter set `lora` in the
    /// batch, first: answers in progress never wait for someone else's prompt. Returns the
    /// batch room left.
    fn add_next_tokens(&mut self, mut budget: usize, lora: LoraKey) -> usize {
        // Whatever this step does not decode has no logits to read (a batch undone by
        // `cache_full` left its indices behind).
        for a in self.slots.iter_mut().flatten() {
            a.logits_at = None;
            a.score_at.clear();
        }
        for a in self.slots.iter_mut().flatten() {
            if a.job.lora != lora {
                continue;
            }
            a.last_step = self.steps;
            if let Some(tok) = a.next {
                if budget == 0 {
                    break;
                }
                self.batch.add(tok, a.n_past as i32, &[a.seq], true).expect("batch sized to n_batch");
                a.logits_at = Some(self.batch.n_tokens() - 1);
                budget -= 1;
            }
        }
        budget
    }

    /// Fills the rest of the batch with prompt tokens of sequences still reading theirs
    /// (chunked prefill), asking for the logits that start an answer or score a token.
    fn add_prompt_chunks(&mut self, mut budget: usize, lora: LoraKey) {
        for a in self.slots.iter_mut().flatten() {
            if a.next.is_some() || budget == 0 || a.job.lora != lora {
                continue;
            }
            let prompt = &a.job.tokens;
            let take = (prompt.len() - a.prefilled).min(budget);
            a.score_at.clear();
            for (j, &tok) in prompt[a.prefilled..a.prefilled + take].iter().enumerate() {
                let pos = a.prefilled + j;
                let last = pos + 1 == prompt.len();
                // Scoring wants the logits that predict every token from `score_from` on.
                let scored = a.job.score_from.is_some_and(|from| pos + 1 >= from && !last);
                self.batch.add(tok, pos as i32, &[a.seq], last || scored).expect("batch sized to n_batch");
                if scored {
                    a.score_at.push((self.batch.n_tokens() - 1, prompt[pos + 1]));
                }
                if last && a.job.score_from.is_none() {
                    a.logits_at = Some(self.batch.n_tokens() - 1);
                }
            }
            a.prefilled += take;
            a.n_past = a.prefilled;
            budget -= take;
        }
    }

    /// The cache had no room for this batch, so nothing of it was decoded (one
    /// micro-batch): undo the prefill, then make room by dropping kept prompts, or else by
    /// failing the newest request rather than everyone.
    fn cache_full(&mut self, before: &[Option<usize>]) {
        for (slot, before) in self.slots.iter_mut().zip(before) {
            if let (Some(a), Some(p)) = (slot.as_mut(), before) {
                a.prefilled = *p;
                a.n_past = if a.next.is_some() { a.n_past } else { *p };
            }
        }
        if self.evict_kept() {
            tracing::debug!("KV cache full; dropped the prompts kept for reuse");
            return;
        }
        let newest = (0..self.slots.len())
            .filter(|&i| self.slots[i].is_some())
            .max_by_key(|&i| self.slots[i].as_ref().map_or(0, |a| a.admitted));
        let span = newest.and_then(|i| self.slots[i].as_ref()).map_or_else(tracing::Span::none, |a| a.job.span.clone());
        span.in_scope(|| tracing::warn!("KV cache full; failing the newest generation"));
        if let Some(i) = newest {
            self.fail(i, "the model's context is full; please ask again");
        }
    }

    /// After a decode: scoring sequences add up their log-probabilities, generating ones
    /// sample their next token and stream it.
    fn read_logits(&mut self) {
        for i in 0..self.slots.len() {
            let Some(a) = self.slots[i].as_mut() else { continue };
            if a.job.score_from.is_some() {
                for &(at, target) in &a.score_at {
                    a.logprobs.push(log_softmax_at(self.ctx.get_logits_ith(at), target));
                }
                a.score_at.clear();
                if a.prefilled == a.job.tokens.len() {
                    self.finish(i, StopReason::EndOfText);
                }
                continue;
            }
            let Some(at) = a.logits_at else { continue };
            if a.next.is_some() {
                a.n_past += 1;
            }
            let token = a.chooser.choose(self.ctx.get_logits_ith(at));
            a.generated += 1;
            if !a.job.request.ignore_eos && self.model.vocab().is_eog(token) {
                self.finish(i, StopReason::EndOfText);
                continue;
            }
            a.piece.clear();
            self.model.vocab().token_to_piece_into(token, &mut a.piece, false, None);
            let text = a.utf8.push(&a.piece);
            if let Some(reason) = emit(a, &text) {
                self.finish(i, reason);
                continue;
            }
            if a.generated >= a.job.request.max_tokens {
                self.finish(i, StopReason::Length);
            } else if a.n_past + 1 >= self.context_tokens {
                self.finish(i, StopReason::ContextFull);
            } else {
                a.next = Some(token);
            }
        }
    }

    fn finish(&mut self, i: usize, reason: StopReason) {
        if let Some(mut a) = self.slots[i].take() {
            a.job.span.in_scope(|| tracing::debug!(?reason, generated_tokens = a.generated, "generation finished"));
            if reason != StopReason::StopString {
                let rest = a.utf8.finish();
                a.held.push_str(&rest);
                if reason != StopReason::Cancelled && !a.held.is_empty() {
                    let _ = a.job.events.send(Event::Text(std::mem::take(&mut a.held)));
                }
            }
            let _ = a.job.events.send(Event::Done(Finish {
                reason,
                prompt_tokens: a.job.tokens.len(),
                reused_tokens: a.reused,
                generated_tokens: a.generated,
                token_logprobs: std::mem::take(&mut a.logprobs),
            }));
            if self.decoder_start.is_some() {
                // The cache holds the decoder's answer, nothing a next prompt can reuse.
                self.release(a.seq);
                return;
            }
            // Keep the prompt (not the answer, which the next prompt quotes re-tokenized).
            let _ = self.ctx.clear_kv_cache_seq(Some(a.seq as u32), Some(a.prefilled as u32), None);
            a.job.tokens.truncate(a.prefilled);
            self.kept[a.seq as usize] = a.job.tokens;
            self.kept_lora[a.seq as usize] = a.job.lora;
            self.mark_active();
        }
    }

    fn fail(&mut self, i: usize, message: &str) {
        if let Some(a) = self.slots[i].take() {
            a.job.span.in_scope(|| tracing::debug!(error = message, "generation failed"));
            let _ = a.job.events.send(Event::Failed(message.to_string()));
            self.release(a.seq);
        }
    }

    fn release(&mut self, seq: i32) {
        let _ = self.ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
        self.kept[seq as usize].clear();
        self.mark_active();
    }

    fn mark_active(&mut self) {
        if let Ok(mut q) = self.queue.jobs.lock() {
            q.active = self.slots.iter().filter(|s| s.is_some()).count();
        }
    }
}

/// Sends what is safe to send of `text`, holding back anything that could be the start of
/// a stop string. Returns `Some` when a stop string was found.
fn emit(a: &mut Active, text: &str) -> Option<StopReason> {
    a.held.push_str(text);
    let stops = &a.job.request.stop;
    if let Some(at) = stops.iter().filter_map(|s| a.held.find(s.as_str())).min() {
        a.held.truncate(at);
        if !a.held.is_empty() {
            let _ = a.job.events.send(Event::Text(std::mem::take(&mut a.held)));
        }
        return Some(StopReason::StopString);
    }
    let keep = stops.iter().map(|s| longest_suffix_prefix(&a.held, s)).max().unwrap_or(0);
    let cut = a.held.len() - keep;
    if cut > 0 {
        let rest = a.held.split_off(cut);
        let out = std::mem::replace(&mut a.held, rest);
        let _ = a.job.events.send(Event::Text(out));
    }
    None
}

/// Length in bytes of the longest suffix of `text` that is a proper prefix of `stop`
/// (always at a character boundary of `text`).
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    let max = stop.len().saturating_sub(1).min(text.len());
    (1..=max)
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && stop.starts_with(&text[text.len() - n..]))
        .unwrap_or(0)
}

/// log softmax(logits)[target], computed stably.
fn log_softmax_at(logits: &[f32], target: LlamaToken) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    logits.get(target.0 as usize).map_or(f64::NEG_INFINITY, |&l| l as f64 - max - sum.ln())
}

#[async_trait::async_trait]
impl lore_core::Scorer for Generator {
    async fn logprob(&self, context: &str, continuation: &str) -> anyhow::Result<f64> {
        Ok(self.score(context, continuation).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::longest_suffix_prefix;

    #[test]
    fn holds_back_a_possible_stop_string_start() {
        assert_eq!(longest_suffix_prefix("answer\nQues", "\nQuestion:"), 5);
        assert_eq!(longest_suffix_prefix("answer", "\nQuestion:"), 0);
        assert_eq!(longest_suffix_prefix("é", "x"), 0);
    }
}
