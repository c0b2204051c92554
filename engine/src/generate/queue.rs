//! What the handles and the worker thread share: the requests waiting for a sequence, and
//! the flags a handle raises for the worker (stop, forget kept prompts, crash in tests).
//! A std `Mutex` is fine here: it is held for a few field updates, never across an await.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use llama_cpp_2::token::LlamaToken;
use lore_core::{Event, GenerateError, GenerateRequest};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::schedule::LoraKey;

/// One request, as the worker serves it.
pub(super) struct Job {
    pub(super) tokens: Vec<LlamaToken>,
    pub(super) lora: LoraKey,
    /// Scoring instead of generating: tokens from this index on are scored, none generated.
    pub(super) score_from: Option<usize>,
    pub(super) request: GenerateRequest,
    pub(super) events: mpsc::UnboundedSender<Event>,
    pub(super) cancel: CancellationToken,
    /// The span of whoever asked (a question's): the worker writes this job's lines in it.
    pub(super) span: tracing::Span,
}

impl Job {
    /// Its `Generation` was dropped or cancelled: nobody reads the answer.
    pub(super) fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled() || self.events.is_closed()
    }
}

pub(super) struct Queue {
    pub(super) jobs: Mutex<QueueState>,
    pub(super) wake: Condvar,
    /// KV cells holding tokens after the worker's last step (running and kept prompts).
    cells_in_use: AtomicUsize,
}

pub(super) struct QueueState {
    pub(super) waiting: VecDeque<Job>,
    /// Sequences currently in use by the worker.
    pub(super) active: usize,
    /// Drop the prompts free sequences keep for reuse (see `Generator::forget_cached_prompts`).
    pub(super) forget: bool,
    pub(super) shutdown: bool,
    /// A test asked the worker to panic (`Generator::crash_for_tests`).
    pub(super) crash: bool,
}

impl Queue {
    pub(super) fn new() -> Self {
        Self {
            jobs: Mutex::new(QueueState {
                waiting: VecDeque::new(),
                active: 0,
                forget: false,
                shutdown: false,
                crash: false,
            }),
            wake: Condvar::new(),
            cells_in_use: AtomicUsize::new(0),
        }
    }

    /// Tells the worker to stop once it is between steps.
    pub(super) fn stop(&self) {
        self.signal(|q| q.shutdown = true);
    }

    /// Tells the worker to drop the prompts it keeps, before it admits the next request.
    pub(super) fn forget_cached_prompts(&self) {
        self.signal(|q| q.forget = true);
    }

    /// Makes the worker panic at its next step.
    pub(super) fn crash_for_tests(&self) {
        self.signal(|q| q.crash = true);
    }

    fn signal(&self, raise: impl FnOnce(&mut QueueState)) {
        if let Ok(mut q) = self.jobs.lock() {
            raise(&mut q);
        }
        self.wake.notify_all();
    }

    /// Queues `job` behind the others (it learns its position when all `parallel`
    /// sequences are taken), unless `max_queue` jobs wait already or the worker stopped.
    pub(super) fn push(&self, job: Job, max_queue: usize, parallel: usize) -> Result<(), GenerateError> {
        let mut q = self.jobs.lock().map_err(|_| GenerateError::Stopped)?;
        if q.shutdown {
            return Err(GenerateError::Stopped);
        }
        if q.waiting.len() >= max_queue {
            return Err(GenerateError::QueueFull(q.waiting.len()));
        }
        let busy = q.active + q.waiting.len() >= parallel;
        let events = job.events.clone();
        q.waiting.push_back(job);
        if busy {
            let _ = events.send(Event::Queued { position: q.waiting.len() });
        }
        drop(q);
        self.wake.notify_all();
        Ok(())
    }

    pub(super) fn cells_in_use(&self) -> usize {
        self.cells_in_use.load(Ordering::Relaxed)
    }

    pub(super) fn set_cells_in_use(&self, cells: usize) {
        self.cells_in_use.store(cells, Ordering::Relaxed);
    }

    /// After the worker died: refuse new jobs and fail every waiting one in words.
    /// (Running ones died with the worker: their event channels closed.)
    pub(super) fn fail_everything_waiting(&self, message: &str) {
        let mut q = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        q.shutdown = true;
        for job in q.waiting.drain(..) {
            let _ = job.events.send(Event::Failed(format!("the generator stopped: {message}")));
        }
    }
}
