//! Chat messages in, answers out: what every adapter produces and what the daemon answers
//! through. Nothing platform-specific: adapters turn their platform's events into these.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One message a bot should consider answering.
pub struct Incoming {
    /// Name of the bot (from the config) that received it.
    pub bot: String,
    /// Where the conversation lives: recent turns are kept per key.
    pub conversation: ConversationKey,
    /// Channel (Discord channel or thread, Telegram chat) used for per-channel routing.
    pub channel: String,
    /// The channel a Discord thread or forum post was opened in: it answers like that
    /// channel unless the thread itself is configured.
    pub parent_channel: Option<String>,
    /// A direct message or private chat: only the asker and the bot are there.
    pub private: bool,
    pub author: Author,
    /// The question, with the bot mention or `/ask` stripped.
    pub text: String,
    /// A bot command instead of a question.
    pub command: Option<Command>,
    /// Where the answer goes.
    pub reply: Box<dyn ReplySink>,
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("bot", &self.bot)
            .field("conversation", &self.conversation)
            .field("channel", &self.channel)
            .field("parent_channel", &self.parent_channel)
            .field("private", &self.private)
            .field("author", &self.author)
            .field("text", &self.text)
            .field("command", &self.command)
            .finish_non_exhaustive()
    }
}

/// Identifies a conversation across restarts: platform, place, and (in DMs) the person.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationKey(pub String);

impl fmt::Display for ConversationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Author {
    /// Platform user id, as text.
    pub id: String,
    pub name: String,
    /// Discord role ids of the author in this guild (empty elsewhere).
    pub roles: Vec<String>,
}

/// Commands every adapter understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Help,
    Sources,
    Reset,
    Kb,
}

impl Command {
    /// Parses `/help`, `/sources`, `/reset`, `/kb` (optionally `@botname`-suffixed).
    pub fn parse(text: &str) -> Option<Self> {
        let word = text.split_whitespace().next()?;
        let word = word.strip_prefix('/')?;
        let word = word.split('@').next().unwrap_or(word);
        match word.to_ascii_lowercase().as_str() {
            "help" | "start" => Some(Self::Help),
            "sources" => Some(Self::Sources),
            "reset" => Some(Self::Reset),
            "kb" => Some(Self::Kb),
            _ => None,
        }
    }

    pub const ALL: [(Self, &'static str, &'static str); 4] = [
        (Self::Help, "help", "What this bot does and how to ask"),
        (Self::Sources, "sources", "Show the passages behind the last answer"),
        (Self::Reset, "reset", "Forget this conversation"),
        (Self::Kb, "kb", "Which knowledge base this channel uses"),
    ];
}

/// A passage an answer drew on, as shown to the user.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRef {
    /// Its number in the prompt (`[1]`, `[2]`, ...).
    pub number: usize,
    /// File it came from, as the user named it.
    pub source: String,
    /// Where in the file: e.g. "lines 12-20".
    pub location: String,
    /// The stored passage's id, to open exactly what was used (`GET /v1/sources/{id}`);
    /// empty when unknown.
    pub id: String,
}

/// Where one answer goes. Adapters throttle edits and split long text themselves.
#[async_trait]
pub trait ReplySink: Send {
    /// Show that an answer is being prepared.
    async fn typing(&mut self) -> anyhow::Result<()>;
    /// The answer so far (the whole text, not a delta). May be called for every token:
    /// the sink decides when to actually send an edit.
    async fn update(&mut self, text_so_far: &str) -> anyhow::Result<()>;
    /// The final answer and the passages it drew on.
    async fn finish(&mut self, text: &str, sources: &[SourceRef]) -> anyhow::Result<()>;
    /// A plain message (help text, refusals, command output), not streamed.
    async fn say(&mut self, text: &str) -> anyhow::Result<()>;
}

/// A connection to one platform for one bot.
#[async_trait]
pub trait Adapter: Send {
    /// Runs until `shutdown` fires, feeding every message worth considering into `inbox`,
    /// and telling `connected` once the platform takes it (and again after reconnecting, if
    /// it likes).
    async fn run(
        self: Box<Self>,
        inbox: mpsc::Sender<Incoming>,
        shutdown: CancellationToken,
        connected: Connected,
    ) -> anyhow::Result<()>;
}

/// How an adapter tells whoever runs it that it is connected to its platform: the daemon's
/// readiness counts a bot as running only from then on (a bot whose platform does not
/// answer is not ready). Cheap to clone; telling twice is harmless.
#[derive(Clone)]
pub struct Connected(Arc<dyn Fn() + Send + Sync>);

impl Connected {
    pub fn new(on_connected: impl Fn() + Send + Sync + 'static) -> Self {
        Self(Arc::new(on_connected))
    }

    /// For an adapter nobody watches.
    pub fn ignored() -> Self {
        Self::new(|| {})
    }

    pub fn now(&self) {
        (self.0)()
    }
}
