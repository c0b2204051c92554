//! The worker: the OS thread that owns the llama.cpp context. It admits waiting requests
//! into free sequences and decodes one batch per step; what it decides (which adapter
//! set, what goes into the batch, which sequence, whom a full cache fails) comes from
//! `schedule`, and this module carries it out on the context.

use std::path::PathBuf;
use std::sync::{Arc, MutexGuard};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::{DecodeError, LlamaStateSeqFlags, SeqState};
use tokio_util::sync::CancellationToken;

use lore_core::{Event, Finish, StopReason};

use super::prompt_cache::PromptCache;
use super::queue::{Job, Queue, QueueState};
use super::schedule::{self, Kept, LoraKey, MakeRoom, Place, Share, Want};
use super::stop_strings;
use crate::sampling::TokenChooser;
use crate::settings::GeneratorConfig;
use crate::{EngineError, Utf8Stream};

/// The sizes the worker's context is built with.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sizes {
    /// Sequences decoded together (one conversation each).
    pub(super) parallel: usize,
    /// KV cells of one sequence: prompt and answer together.
    pub(super) context_tokens: usize,
    /// Tokens one step decodes at most.
    pub(super) batch_tokens: usize,
    /// Host memory for saved prompts (`prompt_cache.rs`); none for encoder-decoders,
    /// whose cache holds the decoder's answer.
    pub(super) prompt_cache_bytes: usize,
}

impl Sizes {
    pub(super) fn new(cfg: &GeneratorConfig, model: &LlamaModel, encoder_decoder: bool) -> Self {
        // One encoder output per context: see the module's comment in `generate`.
        let parallel = if encoder_decoder { 1 } else { cfg.parallel.max(1) };
        let train_ctx = model.n_ctx_train() as usize;
        let context_tokens = if train_ctx > 0 { cfg.context_tokens.min(train_ctx) } else { cfg.context_tokens };
        // llama.cpp encodes a prompt in one micro-batch (and aborts if it does not fit).
        let batch_tokens = if encoder_decoder { cfg.batch_tokens.max(context_tokens) } else { cfg.batch_tokens };
        let prompt_cache_bytes = if encoder_decoder { 0 } else { cfg.prompt_cache_mib << 20 };
        Self { parallel, context_tokens, batch_tokens, prompt_cache_bytes }
    }

    fn context_params(self, threads: i32) -> LlamaContextParams {
        LlamaContextParams::default()
            .with_n_ctx(std::num::NonZeroU32::new((self.context_tokens * self.parallel) as u32))
            .with_n_batch(self.batch_tokens as u32)
            .with_n_ubatch(self.batch_tokens as u32)
            .with_n_seq_max(self.parallel as u32)
            .with_kv_unified(true)
            .with_n_threads(threads)
            .with_n_threads_batch(threads)
    }
}

/// What the worker thread starts with.
pub(super) struct Start {
    pub(super) model: Arc<LlamaModel>,
    pub(super) adapters: Vec<LlamaLoraAdapter>,
    pub(super) queue: Arc<Queue>,
    /// Cancelled if the thread dies.
    pub(super) died: CancellationToken,
    pub(super) sizes: Sizes,
    pub(super) threads: i32,
    pub(super) path: PathBuf,
    pub(super) encoder_decoder: bool,
}

/// Starts the worker thread; returns once it has built its context (it borrows the model,
/// so the thread builds it itself), or with why it could not.
pub(super) fn start(start: Start) -> Result<std::thread::JoinHandle<()>, EngineError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("lore-generator".into())
        .spawn(move || run_thread(start, &ready_tx))
        .map_err(|e| EngineError::Backend(format!("cannot start the generator thread: {e}")))?;
    ready_rx.recv().map_err(|_| EngineError::Stopped("generator"))??;
    Ok(thread)
}

/// The thread's body: build the context, tell the loader, serve until stopped. A panic
/// fails every waiting request and fires `died`.
fn run_thread(start: Start, ready: &std::sync::mpsc::Sender<Result<(), EngineError>>) {
    let Start { model, adapters, queue, died, sizes, threads, path, encoder_decoder } = start;
    let Some(ctx) = crate::worker_context(&model, sizes.context_params(threads), &path, ready) else { return };
    let decoder_start = encoder_decoder.then(|| decoder_start(&model));
    let worker = Worker::new(&model, ctx, queue.clone(), sizes, adapters, decoder_start);
    if let Some(message) = crate::run_supervised("generator", || worker.run()) {
        queue.fail_everything_waiting(&message);
        died.cancel();
    }
}

/// Where an encoder-decoder model's decoder starts: the token the file names, else its
/// start-of-text token, else 0 (T5's pad token, which T5 starts from).
fn decoder_start(model: &LlamaModel) -> LlamaToken {
    [model.decode_start_token(), model.vocab().bos()].into_iter().find(|t| t.0 >= 0).unwrap_or(LlamaToken(0))
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

impl Active {
    /// `job` in sequence `seq`, whose cache holds the first `reused` tokens of its prompt.
    fn new(model: &LlamaModel, seq: usize, admitted: u64, job: Job, reused: usize) -> Self {
        Self {
            seq: seq as i32,
            admitted,
            last_step: 0,
            chooser: TokenChooser::new(model, &job.request.sampling),
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
        }
    }

    fn want(&self) -> Want {
        Want {
            lora: self.job.lora,
            answering: self.next.is_some(),
            prompt_left: self.job.tokens.len() - self.prefilled,
        }
    }

    /// Scoring: adds up the log-probabilities of the tokens this step's logits predict.
    /// Done once the whole text was read.
    fn add_scores(&mut self, ctx: &LlamaContext<'_>) -> Option<StopReason> {
        for &(at, target) in &self.score_at {
            self.logprobs.push(log_softmax_at(ctx.get_logits_ith(at), target));
        }
        self.score_at.clear();
        (self.prefilled == self.job.tokens.len()).then_some(StopReason::EndOfText)
    }

    /// Generating: samples the next token from this step's logits and streams its text.
    /// `Some` when the answer ends.
    fn take_token(&mut self, ctx: &LlamaContext<'_>, model: &LlamaModel, context_tokens: usize) -> Option<StopReason> {
        let at = self.logits_at?;
        if self.next.is_some() {
            self.n_past += 1;
        }
        let token = self.chooser.choose(ctx.get_logits_ith(at));
        self.generated += 1;
        if !self.job.request.ignore_eos && model.vocab().is_eog(token) {
            return Some(StopReason::EndOfText);
        }
        self.piece.clear();
        model.vocab().token_to_piece_into(token, &mut self.piece, false, None);
        let text = self.utf8.push(&self.piece);
        let (sendable, stopped) = stop_strings::release(&mut self.held, &text, &self.job.request.stop);
        if !sendable.is_empty() {
            let _ = self.job.events.send(Event::Text(sendable));
        }
        if stopped {
            return Some(StopReason::StopString);
        }
        let stop = schedule::out_of_tokens(self.generated, self.job.request.max_tokens, self.n_past, context_tokens);
        if stop.is_none() {
            self.next = Some(token);
        }
        stop
    }

    /// Sends the text still held back (unless cancelled or cut at a stop string) and the
    /// end of the generation.
    fn send_end(&mut self, reason: StopReason) {
        if reason != StopReason::StopString {
            let rest = self.utf8.finish();
            self.held.push_str(&rest);
            if reason != StopReason::Cancelled && !self.held.is_empty() {
                let _ = self.job.events.send(Event::Text(std::mem::take(&mut self.held)));
            }
        }
        let _ = self.job.events.send(Event::Done(Finish {
            reason,
            prompt_tokens: self.job.tokens.len(),
            reused_tokens: self.reused,
            generated_tokens: self.generated,
            token_logprobs: std::mem::take(&mut self.logprobs),
        }));
    }
}

struct Worker<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    queue: Arc<Queue>,
    slots: Vec<Option<Active>>,
    /// Per sequence: the prompt tokens its part of the KV cache holds while it is free,
    /// and the adapter set they were computed with.
    kept: Vec<Kept<LlamaToken>>,
    /// Prompts saved to host memory when their sequence's cells were needed.
    saved: PromptCache<LlamaToken, SeqState>,
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
        sizes: Sizes,
        adapters: Vec<LlamaLoraAdapter>,
        decoder_start: Option<LlamaToken>,
    ) -> Self {
        let parallel = sizes.parallel;
        Self {
            model,
            ctx,
            queue,
            slots: (0..parallel).map(|_| None).collect(),
            kept: (0..parallel).map(|_| Kept::default()).collect(),
            saved: PromptCache::new(sizes.prompt_cache_bytes),
            adapters,
            applied: None,
            turn: 0,
            decoder_start,
            steps: 0,
            context_tokens: sizes.context_tokens,
            batch: LlamaBatch::new(sizes.batch_tokens, parallel as i32),
            batch_tokens: sizes.batch_tokens,
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
            let kept: usize = self.kept.iter().map(|k| k.tokens.len()).sum();
            self.queue.set_cells_in_use(running + kept);
        }
    }

    /// Moves waiting jobs into free sequences. Blocks while there is nothing to do.
    /// Returns false when the worker should stop.
    fn admit(&mut self) -> bool {
        let queue = self.queue.clone();
        let Some(mut q) = self.wait_for_work(&queue) else { return false };
        let mut admitted = false;
        while self.slots.iter().any(Option::is_none) {
            let Some(job) = q.waiting.pop_front() else { break };
            if job.is_cancelled() {
                continue;
            }
            self.start_job(job);
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

    /// The queue, once there is work (a running sequence or a waiting job); meanwhile it
    /// obeys the handles' flags. `None` when the worker should stop.
    fn wait_for_work<'q>(&mut self, queue: &'q Queue) -> Option<MutexGuard<'q, QueueState>> {
        let mut q = queue.jobs.lock().ok()?;
        loop {
            if q.shutdown {
                return None;
            }
            if q.crash {
                panic!("crash requested by a test");
            }
            if q.forget {
                self.evict_kept(false);
                self.saved.clear();
                q.forget = false;
            }
            let idle = self.slots.iter().all(Option::is_none);
            if !(idle && q.waiting.is_empty()) {
                return Some(q);
            }
            q = queue.wake.wait(q).ok()?;
        }
    }

    /// Puts `job` in the free sequence `schedule::place_request` picks, keeping the part of
    /// that sequence's cache its prompt reuses and dropping the rest (saved to host memory
    /// first) — or, when a saved prompt shares more with it, restoring that one there.
    fn start_job(&mut self, job: Job) {
        let free = (0..self.slots.len()).filter(|&s| self.slots[s].is_none());
        let Place { seq, mut reused } =
            schedule::place_request(&self.kept, free, &job.tokens, job.lora, job.score_from)
                .expect("called with a free sequence");
        if reused < self.kept[seq].tokens.len() {
            self.save_kept(seq);
        }
        let limit = schedule::reusable_prefix_limit(job.tokens.len(), job.score_from);
        let better_than = reused + schedule::MIN_REUSE_TOKENS;
        if let Some((state, shared)) = self.saved.best(&job.tokens, job.lora, limit, better_than) {
            let _ = self.ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
            reused = match self.ctx.state_seq_set(state, seq as i32) {
                Ok(()) => {
                    let _ = self.ctx.clear_kv_cache_seq(Some(seq as u32), Some(shared as u32), None);
                    shared
                }
                Err(e) => {
                    tracing::debug!(error = %e, "could not restore a saved prompt");
                    let _ = self.ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
                    0
                }
            };
        } else if reused < self.kept[seq].tokens.len() {
            let _ = self.ctx.clear_kv_cache_seq(Some(seq as u32), Some(reused as u32), None);
        }
        self.kept[seq].tokens.clear();
        job.span.in_scope(|| {
            let (prompt_tokens, scoring) = (job.tokens.len(), job.score_from.is_some());
            tracing::debug!(seq, prompt_tokens, reused_tokens = reused, scoring, "generation started");
        });
        self.admissions += 1;
        self.slots[seq] = Some(Active::new(self.model, seq, self.admissions, job, reused));
    }

    /// Saves the prompt free sequence `seq` keeps to host memory, when it is worth it.
    fn save_kept(&mut self, seq: usize) {
        let kept = &self.kept[seq];
        if !self.saved.wants(&kept.tokens, kept.lora) {
            return;
        }
        match self.ctx.state_seq_get(seq as i32, LlamaStateSeqFlags::empty()) {
            Ok(state) => {
                let (bytes, tokens) = (state.byte_len(), kept.tokens.len());
                self.saved.save(kept.tokens.clone(), kept.lora, state, bytes);
                tracing::debug!(seq, tokens, bytes, held = self.saved.bytes(), "prompt saved to host memory");
            }
            Err(e) => tracing::debug!(error = %e, "could not save a prompt"),
        }
    }

    /// Drops what free sequences keep, to make room in the cache (`save`: saving it to
    /// host memory first).
    fn evict_kept(&mut self, save: bool) {
        for seq in 0..self.slots.len() {
            if self.slots[seq].is_none() && !self.kept[seq].tokens.is_empty() {
                if save {
                    self.save_kept(seq);
                }
                let _ = self.ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
                self.kept[seq].tokens.clear();
            }
        }
    }

    /// Ends the requests whose `Generation` was dropped or cancelled.
    fn drop_cancelled(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i].as_ref().is_some_and(|a| a.job.is_cancelled()) {
                self.finish(i, StopReason::Cancelled);
            }
        }
    }

    /// Decodes one batch of one adapter set: one token per answering sequence, then prompt
    /// chunks; then reads the logits of everyone who got some.
    fn step(&mut self) {
        self.steps += 1;
        let running = self.slots.iter().flatten().map(|a| (a.job.lora, a.last_step));
        let Some((lora, turn)) = schedule::adapter_set_for_step(self.applied, self.turn, running) else { return };
        self.turn = turn;
        if let Err(e) = self.apply(lora) {
            tracing::error!(error = %e, "setting the LoRA adapter failed");
            self.fail_where(|a| a.job.lora == lora, &format!("setting the LoRA adapter failed: {e}"));
            return;
        }
        if let Some(start) = self.decoder_start {
            self.encode_prompts(start);
        }
        let before: Vec<Option<usize>> = self.slots.iter().map(|s| s.as_ref().map(|a| a.prefilled)).collect();
        self.fill_batch(lora);
        if self.batch.n_tokens() == 0 {
            return;
        }
        match self.ctx.decode(&mut self.batch) {
            Ok(()) => self.read_logits(),
            Err(DecodeError::NoKvCacheSlot) => self.cache_full(&before),
            Err(e) => {
                tracing::error!(error = %e, "decode failed");
                self.fail_where(|_| true, &format!("decode failed: {e}"));
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

    /// Builds this step's batch as `schedule::fill_batch` shares it out among the sequences
    /// of adapter set `lora`.
    fn fill_batch(&mut self, lora: LoraKey) {
        self.batch.clear();
        let wants: Vec<Option<Want>> = self.slots.iter().map(|s| s.as_ref().map(Active::want)).collect();
        let shares = schedule::fill_batch(&wants, lora, self.batch_tokens);
        // Whatever this step does not decode has no logits to read (a batch undone by
        // `cache_full` left its indices behind).
        for a in self.slots.iter_mut().flatten() {
            a.logits_at = None;
            a.score_at.clear();
        }
        self.add_next_tokens(&shares);
        self.add_prompt_chunks(&shares);
    }

    /// Puts the next token of the answering sequences in the batch, first: answers in
    /// progress never wait for someone else's prompt.
    fn add_next_tokens(&mut self, shares: &[Share]) {
        for (a, share) in self.slots.iter_mut().zip(shares) {
            let Some(a) = a.as_mut() else { continue };
            if share.served {
                a.last_step = self.steps;
            }
            if let (true, Some(tok)) = (share.next_token, a.next) {
                self.batch.add(tok, a.n_past as i32, &[a.seq], true).expect("batch sized to n_batch");
                a.logits_at = Some(self.batch.n_tokens() - 1);
            }
        }
    }

    /// Fills the rest of the batch with prompt tokens of sequences still reading theirs
    /// (chunked prefill), asking for the logits that start an answer or score a token.
    fn add_prompt_chunks(&mut self, shares: &[Share]) {
        for (a, share) in self.slots.iter_mut().zip(shares) {
            let (Some(a), take @ 1..) = (a.as_mut(), share.prompt_tokens) else { continue };
            let prompt = &a.job.tokens;
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
        }
    }

    /// The cache had no room for this batch, so nothing of it was decoded (one
    /// micro-batch): undo the prefill, then make room as `schedule::make_room` says.
    fn cache_full(&mut self, before: &[Option<usize>]) {
        for (slot, before) in self.slots.iter_mut().zip(before) {
            if let (Some(a), Some(p)) = (slot.as_mut(), before) {
                a.prefilled = *p;
                a.n_past = if a.next.is_some() { a.n_past } else { *p };
            }
        }
        let free_sequences_keep = self.slots.iter().zip(&self.kept).any(|(s, k)| s.is_none() && !k.tokens.is_empty());
        let running = self.slots.iter().enumerate().filter_map(|(i, s)| Some((i, s.as_ref()?.admitted)));
        match schedule::make_room(free_sequences_keep, running) {
            Some(MakeRoom::DropKept) => {
                self.evict_kept(true);
                tracing::debug!("KV cache full; dropped the prompts kept for reuse");
            }
            Some(MakeRoom::Fail(i)) => {
                let span = self.slots[i].as_ref().map_or_else(tracing::Span::none, |a| a.job.span.clone());
                span.in_scope(|| tracing::warn!("KV cache full; failing the newest generation"));
                self.fail(i, "the model's context is full; please ask again");
            }
            None => tracing::warn!("KV cache full with nothing running"),
        }
    }

    /// After a decode: scoring sequences add up their log-probabilities, generating ones
    /// sample their next token and stream it.
    fn read_logits(&mut self) {
        for i in 0..self.slots.len() {
            let Some(a) = self.slots[i].as_mut() else { continue };
            let end = match a.job.score_from {
                Some(_) => a.add_scores(&self.ctx),
                None => a.take_token(&self.ctx, self.model, self.context_tokens),
            };
            if let Some(reason) = end {
                self.finish(i, reason);
            }
        }
    }

    /// Ends the request in slot `i`. Its sequence keeps the prompt's cells for a next
    /// request to reuse (not the answer's, which the next prompt quotes re-tokenized).
    fn finish(&mut self, i: usize, reason: StopReason) {
        let Some(mut a) = self.slots[i].take() else { return };
        a.job.span.in_scope(|| tracing::debug!(?reason, generated_tokens = a.generated, "generation finished"));
        a.send_end(reason);
        if self.decoder_start.is_some() {
            // The cache holds the decoder's answer, nothing a next prompt can reuse.
            self.release(a.seq);
            return;
        }
        let _ = self.ctx.clear_kv_cache_seq(Some(a.seq as u32), Some(a.prefilled as u32), None);
        a.job.tokens.truncate(a.prefilled);
        self.kept[a.seq as usize] = Kept { tokens: a.job.tokens, lora: a.job.lora };
        self.mark_active();
    }

    fn fail(&mut self, i: usize, message: &str) {
        if let Some(a) = self.slots[i].take() {
            a.job.span.in_scope(|| tracing::debug!(error = message, "generation failed"));
            let _ = a.job.events.send(Event::Failed(message.to_string()));
            self.release(a.seq);
        }
    }

    /// Fails every running request that `which` picks.
    fn fail_where(&mut self, which: impl Fn(&Active) -> bool, message: &str) {
        for i in 0..self.slots.len() {
            if self.slots[i].as_ref().is_some_and(&which) {
                self.fail(i, message);
            }
        }
    }

    /// Frees sequence `seq` entirely: nothing of it is kept.
    fn release(&mut self, seq: i32) {
        let _ = self.ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
        self.kept[seq as usize].tokens.clear();
        self.mark_active();
    }

    fn mark_active(&mut self) {
        if let Ok(mut q) = self.queue.jobs.lock() {
            q.active = self.slots.iter().filter(|s| s.is_some()).count();
        }
    }
}

/// log softmax(logits)[target], computed stably.
fn log_softmax_at(logits: &[f32], target: LlamaToken) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    logits.get(target.0 as usize).map_or(f64::NEG_INFINITY, |&l| l as f64 - max - sum.ln())
}
