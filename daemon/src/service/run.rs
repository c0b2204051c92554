//! The daemon's loop (`lore run`, `lore serve` with no adapters, `lore chat` with the
//! console's): adapters feed one inbox, the router
//! handles each message, and the whole stops cleanly on a signal.
//!
//! Stopping: on SIGTERM or Ctrl-C the adapters stop taking messages, answers in progress
//! get `shutdown_grace_secs` to finish, and those still running then end with a note
//! that the bot is restarting (in place of their partial text). The exit code is 0.
//!
//! Supervision: an adapter that fails — at start (a bad token) or later — is logged at once
//! with its reason and started again with exponential backoff, while the other bots go
//! on. A panic while answering is one failed answer (the router catches it). If a model's
//! thread dies (the generator's, the embedder's or the cross-encoder's), every question
//! in flight that needs it fails in words and the daemon exits with an error, so that a
//! service manager (systemd's `Restart=on-failure`) starts it afresh: a model in an
//! unknown state is not worth keeping.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use lore_adapters::console::ConsoleAdapter;
use lore_core::{panic_message, Adapter, Connected, Incoming};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::app::{Answering, App};
use crate::config::{AdapterConfig, Config};
use crate::question::router::Router;
use crate::service::http::AdapterStates;

/// How to start (and start again) one bot's adapter.
pub struct AdapterSpec {
    pub bot: String,
    pub make: Box<dyn Fn() -> anyhow::Result<Box<dyn Adapter>> + Send + Sync>,
}

impl AdapterSpec {
    pub fn new(bot: &str, make: impl Fn() -> anyhow::Result<Box<dyn Adapter>> + Send + Sync + 'static) -> Self {
        Self { bot: bot.to_string(), make: Box::new(make) }
    }
}

/// One [`AdapterSpec`] per configured bot, its token read from the environment now (a
/// missing one is an error before anything starts).
pub fn adapter_specs(config: &Config) -> anyhow::Result<Vec<AdapterSpec>> {
    let mut adapters: Vec<AdapterSpec> = Vec::new();
    let mut console = None;
    for (name, bot) in &config.bots {
        let key = format!("bots.{name}.adapter");
        let bot_name = name.clone();
        let spec = match &bot.adapter {
            AdapterConfig::Console => {
                if let Some(other) = console.replace(name.clone()) {
                    anyhow::bail!("bots {other:?} and {name:?} both use the console; only one can read the terminal");
                }
                AdapterSpec::new(name, move || Ok(Box::new(ConsoleAdapter::new(&bot_name)) as Box<dyn Adapter>))
            }
            #[cfg(feature = "discord")]
            AdapterConfig::Discord(cfg) => {
                let (cfg, token) = (cfg.clone(), token(config, &key, &cfg.token_env)?);
                lore_adapters::discord::DiscordAdapter::new(name, &cfg, token.clone())?;
                AdapterSpec::new(name, move || {
                    Ok(Box::new(lore_adapters::discord::DiscordAdapter::new(&bot_name, &cfg, token.clone())?))
                })
            }
            #[cfg(feature = "telegram")]
            AdapterConfig::Telegram(cfg) => {
                let (cfg, token) = (cfg.clone(), token(config, &key, &cfg.token_env)?);
                lore_adapters::telegram::TelegramAdapter::new(name, &cfg, token.clone())?;
                AdapterSpec::new(name, move || {
                    Ok(Box::new(lore_adapters::telegram::TelegramAdapter::new(&bot_name, &cfg, token.clone())?))
                })
            }
            #[allow(unreachable_patterns)]
            other => anyhow::bail!("{key}: this lore was built without {}", other.missing_feature().unwrap_or("it")),
        };
        adapters.push(spec);
    }
    if adapters.is_empty() && config.server.is_none() {
        anyhow::bail!("{}: no bots (and no `server:`) configured", config.file.display());
    }
    Ok(adapters)
}

/// A bot token from the environment (never logged).
#[cfg(any(feature = "discord", feature = "telegram"))]
fn token(config: &Config, key: &str, var: &str) -> anyhow::Result<String> {
    match std::env::var(var) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => Err(config
            .error(&format!("{key}.token_env"), format!("environment variable {var} holds no bot token"))
            .into()),
    }
}

/// Waits before an adapter is started again: `first`, doubled after each failure up to
/// `longest`; an adapter that ran for `longest` before failing starts over at `first`.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    first: Duration,
    longest: Duration,
}

const RESTARTS: Backoff = Backoff { first: Duration::from_secs(1), longest: Duration::from_secs(60) };
/// How long the askers' "ask again" notes may take once the grace is over: one edit each,
/// and a platform that does not take them in this time is not waited for.
const NOTE_TIME: Duration = Duration::from_secs(10);

/// Runs the adapters and the router until every adapter ends (after `shutdown` fires, or
/// on its own), then lets answers in progress finish, up to a deadline.
pub async fn run_until(app: Arc<App>, adapters: Vec<AdapterSpec>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let router = Router::new(&app.config, app.answering(), Some(app.config.conversations_dir()))?;
    let router = Arc::new(router.with_feedback(Arc::new(app.feedback()?)));
    let states = AdapterStates::default();
    // Recording starts with the daemon, whether or not anyone scrapes.
    crate::metrics::handle();
    let http = match &app.config.server {
        Some(cfg) => {
            Some(crate::service::http::start(cfg, app.clone(), router.clone(), states.clone(), shutdown.clone()).await?)
        }
        None => None,
    };
    let (inbox_tx, inbox) = mpsc::channel(256);
    let mut supervisors = tokio::task::JoinSet::new();
    for spec in adapters {
        supervisors.spawn(supervise(spec, inbox_tx.clone(), shutdown.clone(), RESTARTS, states.clone()));
    }
    drop(inbox_tx);
    let (engine_died, dead_thread) = watch_model_threads(app.model_threads());
    let mut answers = tokio::task::JoinSet::new();
    handle_inbox(&router, inbox, &engine_died, &mut answers).await;
    // Without bots (`lore serve`) the inbox closes at once; the HTTP server goes on.
    if http.is_some() {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = engine_died.cancelled() => {}
        }
    }
    if engine_died.is_cancelled() {
        tracing::error!(thread = dead_thread.get().copied().unwrap_or("model"), "a model stopped; stopping every bot");
        shutdown.cancel();
    }
    finish_answers(&router, &mut answers, app.config.shutdown_grace()).await;
    while let Some(done) = supervisors.join_next().await {
        log_panic(done, "adapter supervisor");
    }
    if let Some(http) = http {
        // Streams still open past the grace are cut.
        let abort = http.abort_handle();
        if tokio::time::timeout(NOTE_TIME, http).await.is_err() {
            tracing::warn!("HTTP responses still streaming; closing them");
            abort.abort();
        }
    }
    router.finish_keeping(NOTE_TIME).await;
    if engine_died.is_cancelled() {
        anyhow::bail!(
            "the {}'s thread died (see the log above); exiting so that a service manager starts lore afresh",
            dead_thread.get().copied().unwrap_or("model")
        );
    }
    Ok(())
}

/// Hands each message of `inbox` to the router in a task of `answers`, until the inbox
/// closes (every adapter ended) or a model's thread dies.
async fn handle_inbox(
    router: &Arc<Router<Answering>>,
    mut inbox: mpsc::Receiver<Incoming>,
    engine_died: &CancellationToken,
    answers: &mut tokio::task::JoinSet<()>,
) {
    // Messages being handled at once: everyone in line and being answered, and room for
    // commands. Past that the loop stops reading, the inbox fills, and adapters wait:
    // pushing back on the platforms instead of spawning without bound.
    let settings = router.line().settings();
    let handling = Arc::new(tokio::sync::Semaphore::new(settings.max_waiting + settings.concurrent + 64));
    loop {
        let msg = tokio::select! {
            msg = inbox.recv() => msg,
            () = engine_died.cancelled() => None,
        };
        let Some(msg) = msg else { break };
        let permit = handling.clone().acquire_owned().await.expect("never closed");
        let handled = router.handle(msg);
        answers.spawn(async move {
            handled.await;
            drop(permit);
        });
        // Reap finished answers so the set does not grow without bound.
        while let Some(done) = answers.try_join_next() {
            log_panic(done, "answer");
        }
    }
}

/// Lets the answers in progress, chats' and HTTP's, finish within `grace`; then asks
/// their askers to ask again, and waits for those notes a little longer.
async fn finish_answers(router: &Router<Answering>, answers: &mut tokio::task::JoinSet<()>, grace: Duration) {
    let line = router.line().clone();
    // Chat answers are tasks here; HTTP answers hold places in the same line.
    let everything_answered = async {
        finish_all(answers).await;
        while line.answering() + line.waiting() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(grace, everything_answered).await.is_err() {
        tracing::warn!(
            answers = answers.len() + line.answering() + line.waiting(),
            "answers still running after {} s; asking their askers to ask again",
            grace.as_secs()
        );
        router.give_up_answers();
        if tokio::time::timeout(NOTE_TIME, finish_all(answers)).await.is_err() {
            tracing::warn!(answers = answers.len(), "notes not delivered in time; stopping anyway");
            answers.abort_all();
        }
    }
}

/// A token that fires when any of `threads` dies, and the name of the one that did.
fn watch_model_threads(
    threads: Vec<(&'static str, CancellationToken)>,
) -> (CancellationToken, Arc<std::sync::OnceLock<&'static str>>) {
    let (died, dead) = (CancellationToken::new(), Arc::new(std::sync::OnceLock::new()));
    if !threads.is_empty() {
        let (died, dead) = (died.clone(), dead.clone());
        tokio::spawn(async move {
            let deaths = threads.into_iter().map(|(name, token)| {
                Box::pin(async move {
                    token.cancelled().await;
                    name
                })
            });
            let (name, _, _) = futures::future::select_all(deaths).await;
            let _ = dead.set(name);
            died.cancel();
        });
    }
    (died, dead)
}

async fn finish_all(answers: &mut tokio::task::JoinSet<()>) {
    while let Some(done) = answers.join_next().await {
        log_panic(done, "answer");
    }
}

fn log_panic(done: Result<(), tokio::task::JoinError>, task: &str) {
    if let Err(error) = done {
        if error.is_panic() {
            tracing::error!(task, panic = panic_message(&*error.into_panic()), "a task panicked");
        }
    }
}

/// Runs one bot's adapter until `shutdown`, starting it again whenever it fails.
async fn supervise(
    spec: AdapterSpec,
    inbox: mpsc::Sender<Incoming>,
    shutdown: CancellationToken,
    backoff: Backoff,
    states: AdapterStates,
) {
    let mut wait = backoff.first;
    loop {
        let started = Instant::now();
        // Running once the platform took it (a token refused, or a platform that does not
        // answer, keeps the bot out of `/ready`).
        states.set(&spec.bot, "connecting");
        let connected = {
            let (states, bot) = (states.clone(), spec.bot.clone());
            Connected::new(move || states.set(&bot, "running"))
        };
        let outcome = match (spec.make)() {
            Ok(adapter) => std::panic::AssertUnwindSafe(adapter.run(inbox.clone(), shutdown.clone(), connected))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Err(anyhow::anyhow!("panicked: {}", panic_message(&*panic)))),
            Err(error) => Err(error),
        };
        if shutdown.is_cancelled() {
            return;
        }
        let error = match outcome {
            // It finished by itself (the console at end of input): nothing to restart.
            Ok(()) => {
                states.set(&spec.bot, "ended");
                return;
            }
            Err(error) => error,
        };
        if started.elapsed() > backoff.longest {
            wait = backoff.first;
        }
        tracing::error!(bot = %spec.bot, error = format!("{error:#}"), retry_in_s = wait.as_secs_f32(), "adapter failed; starting it again");
        states.set(&spec.bot, format!("failed: {error:#}; starting again in {} s", wait.as_secs()));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(backoff.longest);
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;

    /// Fails at once, like an adapter whose token the platform rejects.
    struct Refused;

    #[async_trait]
    impl Adapter for Refused {
        async fn run(
            self: Box<Self>,
            _: mpsc::Sender<Incoming>,
            _: CancellationToken,
            _: Connected,
        ) -> anyhow::Result<()> {
            anyhow::bail!("the platform rejected the token")
        }
    }

    /// Panics once started.
    struct Broken;

    #[async_trait]
    impl Adapter for Broken {
        async fn run(
            self: Box<Self>,
            _: mpsc::Sender<Incoming>,
            _: CancellationToken,
            _: Connected,
        ) -> anyhow::Result<()> {
            panic!("adapter bug")
        }
    }

    async fn starts_within(spec_make: fn() -> Box<dyn Adapter>, within: Duration) -> usize {
        let starts = Arc::new(AtomicUsize::new(0));
        let counted = starts.clone();
        let spec = AdapterSpec::new("b", move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(spec_make())
        });
        let (tx, _rx) = mpsc::channel(1);
        let shutdown = CancellationToken::new();
        let fast = Backoff { first: Duration::from_millis(100), longest: Duration::from_secs(10) };
        let task = tokio::spawn(supervise(spec, tx, shutdown.clone(), fast, AdapterStates::default()));
        tokio::time::sleep(within).await;
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(1), task).await.expect("stops on shutdown").unwrap();
        starts.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_failing_adapter_is_started_again_with_growing_waits() {
        // Starts at 0, then after waits of 100, 200 and 400 ms: four starts in 1 s.
        assert_eq!(starts_within(|| Box::new(Refused), Duration::from_millis(1_000)).await, 4);
    }

    #[tokio::test]
    async fn the_death_of_any_model_thread_is_told_and_named() {
        let threads = [("generator", CancellationToken::new()), ("embedder", CancellationToken::new())];
        let (died, dead) = watch_model_threads(threads.to_vec());
        threads[1].1.cancel();
        tokio::time::timeout(Duration::from_secs(5), died.cancelled()).await.expect("told");
        assert_eq!(dead.get(), Some(&"embedder"));
        let (never, _) = watch_model_threads(Vec::new());
        assert!(!never.is_cancelled());
    }

    #[tokio::test]
    async fn a_panicking_adapter_is_started_again() {
        // Started again after each panic. (Not counted against the clock: printing a
        // panic's backtrace from a large test binary may take longer than the first wait.)
        assert!(starts_within(|| Box::new(Broken), Duration::from_secs(3)).await >= 2);
    }
}
