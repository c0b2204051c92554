//! The console: a conversation on standard input and output, for trying a bot locally.

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{Adapter, Author, Command, Connected, ConversationKey, Incoming, ReplySink, SourceRef};

/// Reads one question per line from stdin; answers stream to stdout.
pub struct ConsoleAdapter {
    bot: String,
}

impl ConsoleAdapter {
    pub fn new(bot: impl Into<String>) -> Self {
        Self { bot: bot.into() }
    }
}

#[async_trait]
impl Adapter for ConsoleAdapter {
    async fn run(
        self: Box<Self>,
        inbox: mpsc::Sender<Incoming>,
        shutdown: CancellationToken,
        connected: Connected,
    ) -> anyhow::Result<()> {
        // The terminal is there from the start.
        connected.now();
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        loop {
            prompt().await;
            let line = tokio::select! {
                _ = shutdown.cancelled() => break,
                line = lines.next_line() => line?,
            };
            let Some(line) = line else { break };
            let text = line.trim();
            if text.is_empty() {
                continue;
            }
            if matches!(text, "/quit" | "/exit") {
                break;
            }
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            let incoming = Incoming {
                bot: self.bot.clone(),
                conversation: ConversationKey(format!("console:{}", self.bot)),
                channel: "console".into(),
                parent_channel: None,
                private: true,
                author: Author { id: "console".into(), name: whoami(), roles: vec![] },
                command: Command::parse(text),
                text: text.to_string(),
                reply: Box::new(ConsoleSink { shown: String::new(), done: Some(done_tx) }),
            };
            if inbox.send(incoming).await.is_err() {
                break;
            }
            // One question at a time on a terminal: wait until the answer is printed.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = done_rx => {}
            }
        }
        Ok(())
    }
}

async fn prompt() {
    let mut out = tokio::io::stdout();
    let _ = out.write_all(b"\n> ").await;
    let _ = out.flush().await;
}

fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| "you".into())
}

/// Prints the answer as it grows. Dropping it (even on error) releases the prompt.
pub struct ConsoleSink {
    shown: String,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ConsoleSink {
    /// A sink not tied to a console loop (for one-shot `lore ask`).
    pub fn stdout() -> Self {
        Self { shown: String::new(), done: None }
    }
}

#[async_trait]
impl ReplySink for ConsoleSink {
    async fn typing(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn update(&mut self, text_so_far: &str) -> anyhow::Result<()> {
        // A terminal cannot edit what it printed: print what was added, or start a new line
        // when the text was replaced (e.g. a "waiting in line" notice by the answer).
        if self.shown.starts_with(text_so_far) {
            return Ok(()); // nothing new (e.g. the final text, trimmed)
        }
        let new = match text_so_far.strip_prefix(self.shown.as_str()) {
            Some(added) => added.to_string(),
            None => format!("\n{text_so_far}"),
        };
        if !new.is_empty() {
            let mut out = tokio::io::stdout();
            out.write_all(new.as_bytes()).await?;
            out.flush().await?;
            self.shown = text_so_far.to_string();
        }
        Ok(())
    }

    async fn finish(&mut self, text: &str, sources: &[SourceRef]) -> anyhow::Result<()> {
        self.update(text).await?;
        let mut tail = String::from("\n");
        if !sources.is_empty() {
            tail.push_str("\nSources:\n");
            for s in sources {
                tail.push_str(&format!("  [{}] {} ({})\n", s.number, s.source, s.location));
            }
        }
        let mut out = tokio::io::stdout();
        out.write_all(tail.as_bytes()).await?;
        out.flush().await?;
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
        Ok(())
    }

    async fn say(&mut self, text: &str) -> anyhow::Result<()> {
        let mut out = tokio::io::stdout();
        out.write_all(format!("{text}\n").as_bytes()).await?;
        out.flush().await?;
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
        Ok(())
    }
}
