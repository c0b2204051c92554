//! Support for the end-to-end tests: model and data locations, test configs, fake platform
//! servers on 127.0.0.1 that speak the real wire protocols, and helpers to wait on what
//! they record.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

pub mod capture;
pub mod daemon;
pub mod fake_discord;
pub mod fake_openai;
pub mod fake_telegram;
pub mod hostile;
pub mod llama_server;
pub mod models;
pub mod moto;

/// One request a fake server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// URL path (Discord) or Bot API method name (Telegram).
    pub path: String,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
    /// The status the fake answered with.
    pub status: u16,
    pub at: tokio::time::Instant,
}

/// Once per test process: keep HTTP clients off any proxy, let ingest in this process
/// parse documents with the built `lore`, and log with `RUST_LOG`.
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // A proxy variable in the environment must not reroute the fakes' traffic.
        for var in ["NO_PROXY", "no_proxy"] {
            std::env::set_var(var, "127.0.0.1,localhost");
        }
        // Documents are parsed by `lore parse-document` in a child process; this test
        // binary is not `lore`. Left unset when it is not built: ingest then says so.
        if std::env::var_os(lore::ingest::sandbox::PARSER_ENV).is_none() {
            if let Some(bin) = built_lore_binary().filter(|b| b.is_file()) {
                std::env::set_var(lore::ingest::sandbox::PARSER_ENV, bin);
            }
        }
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
    });
}

/// The `lore` binary: `$LORE_BIN`, else the one cargo built beside this test binary
/// (`cargo build --workspace --bins`, which scripts/test runs first).
pub fn lore_binary() -> std::path::PathBuf {
    if let Ok(bin) = std::env::var("LORE_BIN") {
        return bin.into();
    }
    let bin = built_lore_binary().unwrap();
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build --workspace --bins` (scripts/test does), or set LORE_BIN",
        bin.display()
    );
    bin
}

/// Where cargo puts `lore` beside this test binary (target/<profile>/deps/e2e-<hash>; the
/// binaries sit in <profile>).
fn built_lore_binary() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.join("lore"))
}

/// A port free on 127.0.0.1 right now (for a server a test configures).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `done` every 10 ms until it holds; panics naming `what` after `timeout`.
pub async fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The next message the adapter put in the inbox; panics after `timeout`.
pub async fn next_incoming(
    inbox: &mut tokio::sync::mpsc::Receiver<lore_adapters::Incoming>,
    timeout: Duration,
) -> lore_adapters::Incoming {
    tokio::time::timeout(timeout, inbox.recv())
        .await
        .expect("timed out waiting for a message in the inbox")
        .expect("the adapter closed the inbox")
}

/// What the daemon's router does with a question, canned: typing, a short answer streamed
/// as growing text (60 ms between words, as tokens would come), then the final text with
/// [`sample_sources`]. Returns the answer.
pub async fn stream_sample_answer(reply: &mut dyn lore_adapters::ReplySink) -> String {
    let words = ["Lore ", "turns ", "your ", "notes ", "into ", "a ", "bot ", "that ", "answers."];
    reply.typing().await.expect("typing");
    let mut text = String::new();
    for word in words {
        text.push_str(word);
        reply.update(&text).await.expect("update");
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    reply.finish(&text, &sample_sources()).await.expect("finish");
    text
}

/// Two sources, one with a name full of markup characters.
pub fn sample_sources() -> Vec<lore_adapters::SourceRef> {
    vec![
        lore_adapters::SourceRef {
            number: 1,
            source: "guide.md".into(),
            location: "lines 1-9".into(),
            id: String::new(),
        },
        lore_adapters::SourceRef {
            number: 2,
            source: "my_notes<b>*.md".into(),
            location: "lines 12-20".into(),
            id: String::new(),
        },
    ]
}

/// An answer of about `chars` characters mixing accented words, emoji and a fenced code
/// block, to check that splitting keeps characters, words and code intact.
pub fn long_answer(chars: usize) -> String {
    let mut text = String::new();
    let words = ["naïve", "café", "lore", "émoji😀", "knowledge", "base", "answer"];
    let mut i = 0;
    while text.chars().count() < chars / 2 {
        text.push_str(words[i % words.len()]);
        text.push(if i % 17 == 16 { '\n' } else { ' ' });
        i += 1;
    }
    text.push_str("\n```\n");
    while text.chars().count() < chars {
        text.push_str(&format!("let value_{i} = compute({i});\n"));
        i += 1;
    }
    text.push_str("```\nThat is all.");
    text
}

/// Panics unless every word of `visible` (a piece as the user sees it) is a whole word of
/// `answer` or of [`sample_sources`]: splitting cut nothing in the middle.
pub fn assert_words_whole(visible: &str, answer: &str) {
    let sources = ["Sources", "[1]", "[2]", "guide.md", "(lines", "1-9)", "12-20)", "my_notes<b>*.md"];
    for word in visible.split_whitespace().filter(|w| *w != "```") {
        assert!(
            answer.split_whitespace().any(|a| a == word) || sources.contains(&word),
            "cut or unknown word {word:?}"
        );
    }
}

/// An adapter running in the background, as the daemon runs it.
pub struct RunningAdapter {
    pub inbox: tokio::sync::mpsc::Receiver<lore_adapters::Incoming>,
    /// Whether the adapter said it is connected to its platform.
    pub connected: Arc<AtomicBool>,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningAdapter {
    pub fn spawn(adapter: Box<dyn lore_adapters::Adapter>) -> Self {
        let (tx, inbox) = tokio::sync::mpsc::channel(16);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let connected = Arc::new(AtomicBool::new(false));
        let told = connected.clone();
        let tell = lore_adapters::Connected::new(move || told.store(true, std::sync::atomic::Ordering::SeqCst));
        let task = tokio::spawn(adapter.run(tx, shutdown.clone(), tell));
        Self { inbox, connected, shutdown, task }
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The next message the adapter forwarded; panics after five seconds.
    pub async fn next(&mut self) -> lore_adapters::Incoming {
        next_incoming(&mut self.inbox, Duration::from_secs(5)).await
    }

    /// Panics if the adapter forwarded a message nobody took yet.
    pub fn assert_nothing_more(&mut self) {
        if let Ok(extra) = self.inbox.try_recv() {
            panic!("unexpected message forwarded: {extra:?}");
        }
    }

    /// Signals shutdown; the adapter must return `Ok` within five seconds.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let result =
            tokio::time::timeout(Duration::from_secs(5), self.task).await.expect("the adapter stops on shutdown");
        result.expect("adapter task").expect("adapter result");
    }
}

/// Panics unless `attempts` (one request, sent until it went through) are a 429 then a
/// success, the retry at least `wait` after the refusal.
pub fn assert_retried_after(attempts: &[Recorded], wait: Duration) {
    let statuses: Vec<u16> = attempts.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![429, 200], "one refusal, then one success");
    let waited = attempts[1].at - attempts[0].at;
    // The fake records on arrival: allow for scheduling jitter.
    assert!(waited + Duration::from_millis(50) >= wait, "retried after only {waited:?}");
}

/// An HTTP server on 127.0.0.1 with a free port, stopped when dropped.
struct Server {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(app: axum::Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a port");
        let addr = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake server");
        });
        Self { addr, task }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}
