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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Sources,
    Reset,
    Kb,
    /// `/forget`: delete the asker's votes and their conversation memory here.
    Forget,
    /// `/correct THE RIGHT ANSWER` (or `/correct none`) in reply to an answer, which the
    /// adapter names by the id its 👍/👎 buttons carry; the text is in
    /// [`Incoming::text`].
    Correct {
        answer: Option<String>,
    },
    /// A click on 👍 or 👎 under answer `answer`; a reason, when the platform asked for
    /// one, is [`Incoming::text`].
    Vote {
        answer: String,
        rating: Rating,
    },
}

/// A person's judgement of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rating {
    Up,
    Down,
}

impl Rating {
    /// `up`/`down`, as the buttons' data and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "up" => Some(Self::Up),
            "down" => Some(Self::Down),
            _ => None,
        }
    }
}

/// What a vote button carries: `vote:up:ID` or `vote:down:ID`, short enough for
/// Telegram's 64-byte callback data and Discord's 100-character custom id. The answer's
/// id is in the button itself, so a click after a restart still names its answer.
pub fn vote_button_data(rating: Rating, answer: &str) -> String {
    format!("vote:{}:{answer}", rating.as_str())
}

/// Reads [`vote_button_data`] back: the rating and the answer's id.
pub fn parse_vote_button_data(data: &str) -> Option<(Rating, String)> {
    let rest = data.strip_prefix("vote:")?;
    let (rating, answer) = rest.split_once(':')?;
    let valid = !answer.is_empty() && answer.len() <= 40 && answer.bytes().all(|b| b.is_ascii_alphanumeric());
    Some((Rating::parse(rating)?, answer.to_string())).filter(|_| valid)
}

impl Command {
    /// Parses `/help`, `/sources`, `/reset`, `/kb`, `/forget`, `/correct` (optionally
    /// `@botname`-suffixed). `/correct` names no answer: the adapter fills in the one the
    /// message replies to.
    pub fn parse(text: &str) -> Option<Self> {
        let word = text.split_whitespace().next()?;
        let word = word.strip_prefix('/')?;
        let word = word.split('@').next().unwrap_or(word);
        match word.to_ascii_lowercase().as_str() {
            "help" | "start" => Some(Self::Help),
            "sources" => Some(Self::Sources),
            "reset" => Some(Self::Reset),
            "kb" => Some(Self::Kb),
            "forget" => Some(Self::Forget),
            "correct" => Some(Self::Correct { answer: None }),
            _ => None,
        }
    }

    /// The commands a person types, as platforms list them.
    pub const ALL: [(Self, &'static str, &'static str); 6] = [
        (Self::Help, "help", "What this bot does and how to ask"),
        (Self::Sources, "sources", "Show the passages behind the last answer"),
        (Self::Reset, "reset", "Forget this conversation"),
        (Self::Kb, "kb", "Which knowledge base this channel uses"),
        (Self::Forget, "forget", "Delete your votes and your conversation with this bot"),
        (Self::Correct { answer: None }, "correct", "Admins: reply to an answer with the right one"),
    ];
}

/// The text after a command's first word: `/correct Paris` gives `Paris`.
pub fn command_argument(text: &str) -> &str {
    let text = text.trim_start();
    if !text.starts_with('/') {
        return text.trim();
    }
    text.split_once(char::is_whitespace).map_or("", |(_, rest)| rest.trim())
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
    /// A plain message (help text, refusals, command output), not streamed. For a vote,
    /// the acknowledgement of the click (Telegram's `answerCallbackQuery`, Discord's
    /// interaction response).
    async fn say(&mut self, text: &str) -> anyhow::Result<()>;
    /// Names the answer this sink is about to carry, before it starts: a sink that can
    /// put 👍/👎 under the final text puts this id in them (see [`vote_button_data`]).
    fn answer_id(&mut self, _id: &str) {}
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
