//! Telegram through teloxide's Bot API client: long polling brings messages, answers are
//! HTML messages edited as they stream. A forum topic is a conversation of its own, and its
//! answers stay in it. An answer's last message carries 👍/👎 buttons whose callback data
//! names the answer: a click is a vote, acknowledged by answering its callback query, and
//! an admin's `/correct` in reply to that message names the answer by the same data.

use std::ops::Range;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use lore_core::{parse_vote_button_data, vote_button_data, Rating, Secret};
use serde::Deserialize;
use teloxide::prelude::*;
use teloxide::types::{
    AllowedUpdate, BotCommand, CallbackQueryId, ChatAction, InlineKeyboardButton, InlineKeyboardButtonKind,
    InlineKeyboardMarkup, Me, MessageId, ParseMode, ReplyParameters, ThreadId, UpdateKind, User,
};
use teloxide::{ApiError, RequestError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::bidi::isolate_ltr_runs;
use crate::stream::{with_retries, Failure, Platform, PostKey, StreamingReply, LONGEST_RETRY_AFTER};
use crate::text::{escape_html, split_message, telegram_html};
use crate::throttle::EditThrottle;
use crate::{Adapter, Author, Command, Connected, ConversationKey, Incoming, ReplySink, SourceRef};

/// Telegram allows 4096 characters (UTF-16 code units, after entity parsing) per message.
const LIMIT: usize = 4096;
/// Longest wait between two failed polls.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest text a callback query's answer may show, in characters.
const CLICK_ANSWER_LIMIT: usize = 200;

/// The `telegram:` section of a bot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// Environment variable that holds the bot token.
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// Base URL of a self-hosted Bot API server, instead of `https://api.telegram.org`.
    #[serde(default)]
    pub api_url: Option<String>,
    /// How long one `getUpdates` long poll waits for news, in seconds.
    #[serde(default = "default_poll_timeout_secs")]
    pub poll_timeout_secs: u32,
    /// Least time between two edits of streamed answers in one chat, in milliseconds
    /// (Telegram allows about one edit per second per chat).
    #[serde(default = "default_edit_interval_ms")]
    pub edit_interval_ms: u64,
    /// Longest a call other than the long poll may take before it counts as failed and is
    /// retried, in seconds.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
}

fn default_token_env() -> String {
    "TELEGRAM_TOKEN".into()
}

fn default_request_timeout_secs() -> u64 {
    15
}

fn default_poll_timeout_secs() -> u32 {
    30
}

fn default_edit_interval_ms() -> u64 {
    1000
}

/// One bot's connection to Telegram.
#[derive(Debug)]
pub struct TelegramAdapter {
    name: String,
    cfg: TelegramConfig,
    token: Secret,
    /// `cfg.api_url`, parsed here so that a typo fails at startup, not at the first connection.
    api_url: Option<url::Url>,
}

impl TelegramAdapter {
    pub fn new(bot_name: &str, cfg: &TelegramConfig, token: String) -> anyhow::Result<Self> {
        let token = token.trim().to_string();
        anyhow::ensure!(!token.is_empty(), "the Telegram token (${}) is empty", cfg.token_env);
        let api_url = match &cfg.api_url {
            Some(url) => Some(url::Url::parse(url).with_context(|| format!("telegram.api_url {url:?}"))?),
            None => None,
        };
        Ok(Self { name: bot_name.to_string(), cfg: cfg.clone(), token: Secret::new(token), api_url })
    }

    /// A client whose calls give up after `timeout`.
    fn client(&self, timeout: Duration) -> anyhow::Result<Bot> {
        let http = teloxide::net::default_reqwest_settings().timeout(timeout).build()?;
        let bot = Bot::with_client(self.token.expose(), http);
        Ok(match &self.api_url {
            Some(url) => bot.set_api_url(url.clone()),
            None => bot,
        })
    }
}

#[async_trait]
impl Adapter for TelegramAdapter {
    async fn run(
        self: Box<Self>,
        inbox: mpsc::Sender<Incoming>,
        shutdown: CancellationToken,
        connected: Connected,
    ) -> anyhow::Result<()> {
        // Two clients: a long poll must be given longer than it waits, while an answer's
        // call that gets no reply should be retried long before that.
        let poller = self.client(Duration::from_secs(u64::from(self.cfg.poll_timeout_secs) + 10))?;
        let bot = self.client(Duration::from_secs(self.cfg.request_timeout_secs))?;
        let throttle = EditThrottle::new(Duration::from_millis(self.cfg.edit_interval_ms));
        let mut backoff = Backoff::default();
        let Some(me) = self.connect(&bot, &shutdown, &mut backoff).await? else { return Ok(()) };

        // getMe answered with this token, and polling starts now.
        connected.now();
        // Telegram re-sends every update until a poll's offset passes it: the offset moves on
        // only after the message is in the inbox, so none is lost and none comes twice.
        let mut offset: i32 = 0;
        loop {
            let poll = poller
                .get_updates()
                .offset(offset)
                .timeout(self.cfg.poll_timeout_secs)
                .allowed_updates([AllowedUpdate::Message, AllowedUpdate::CallbackQuery]);
            let updates = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                updates = poll.send() => updates,
            };
            let updates = match updates {
                Ok(updates) => updates,
                Err(RequestError::RetryAfter(after)) => {
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(after.duration().min(LONGEST_RETRY_AFTER)) => continue,
                    }
                }
                Err(error) => {
                    warn!(bot = %self.name, %error, "Telegram getUpdates failed; retrying");
                    backoff.wait(&shutdown).await;
                    continue;
                }
            };
            backoff = Backoff::default();
            for update in updates {
                offset = offset.max(i32::try_from(update.id.0).unwrap_or(i32::MAX).saturating_add(1));
                let incoming = match update.kind {
                    UpdateKind::Message(msg) => self.incoming(&bot, &me, &throttle, &msg),
                    UpdateKind::CallbackQuery(query) => self.click(&bot, query),
                    _ => None,
                };
                let Some(incoming) = incoming else {
                    continue;
                };
                if inbox.send(incoming).await.is_err() {
                    debug!(bot = %self.name, "inbox closed; stopping");
                    return Ok(());
                }
            }
        }
    }
}

impl TelegramAdapter {
    /// Asks Telegram who this bot is until it answers (a refused token is an error; `None`
    /// when shut down first), then clears a webhook and sets the command menu.
    async fn connect(
        &self,
        bot: &Bot,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> anyhow::Result<Option<Me>> {
        let me = loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(None),
                me = bot.get_me().send() => match me {
                    Ok(me) => break me,
                    // A wrong token never gets better.
                    Err(RequestError::Api(ApiError::InvalidToken)) => {
                        anyhow::bail!("Telegram rejected the token of bot {:?}", self.name)
                    }
                    Err(error) => {
                        warn!(bot = %self.name, %error, "Telegram getMe failed; retrying");
                        backoff.wait(shutdown).await;
                    }
                },
            }
        };
        info!(bot = %self.name, username = %me.username(), "connected to Telegram");
        // getUpdates is refused while a webhook is set.
        if let Err(error) = with_retries(TelegramChat::classify, || bot.delete_webhook().send()).await {
            warn!(bot = %self.name, %error, "deleteWebhook failed");
        }
        let commands: Vec<_> = Command::ALL.iter().map(|(_, name, about)| BotCommand::new(*name, *about)).collect();
        if let Err(error) = with_retries(TelegramChat::classify, || bot.set_my_commands(commands.clone()).send()).await
        {
            warn!(bot = %self.name, %error, "setMyCommands failed");
        }
        Ok(Some(me))
    }

    /// The message as a question for the bot, or `None` when it is not addressed to it.
    fn incoming(&self, bot: &Bot, me: &Me, throttle: &EditThrottle, msg: &Message) -> Option<Incoming> {
        let from = msg.from.as_ref()?;
        if from.is_bot {
            return None;
        }
        let text = msg.text().or_else(|| msg.caption())?;
        let username = me.username();
        let private = msg.chat.is_private();
        let topic = forum_topic(msg);
        let (ask, rest) = strip_command(text, "ask", username);
        let mine = replied_message(msg, topic).filter(|m| m.from.as_ref().is_some_and(|u| u.id == me.id));
        let command = command_for_me(text, username).map(|command| match command {
            Command::Correct { answer: None } => Command::Correct { answer: mine.and_then(answer_of) },
            other => other,
        });
        if !(private || ask || mentions(text, username) || mine.is_some() || command.is_some()) {
            return None;
        }
        let chat = TelegramChat { bot: bot.clone(), chat: msg.chat.id, topic, reply_to: (!private).then_some(msg.id) };
        let reply = Box::new(StreamingReply::new(chat, throttle.clone()));
        Some(self.incoming_in(&msg.chat, topic, from, command, remove_mentions(rest, username), reply))
    }

    /// A click on one of the bot's buttons: a vote on the answer its data names (the id is
    /// in the button, so a click on a message from before a restart still names its
    /// answer). Any other click is answered without a word and ignored: until its query is
    /// answered, the clicker's app shows a spinner on the button.
    fn click(&self, bot: &Bot, query: CallbackQuery) -> Option<Incoming> {
        let vote = query.data.as_deref().and_then(parse_vote_button_data);
        let (Some((rating, answer)), Some(message)) = (vote, &query.message) else {
            debug!(bot = %self.name, data = ?query.data, "a click that is no vote; answered and ignored");
            tokio::spawn(answer_click(bot.clone(), query.id, None));
            return None;
        };
        // An old message comes without its topic: the vote counts all the same.
        let topic = message.regular_message().and_then(forum_topic);
        let reply = Box::new(ClickAnswer { bot: bot.clone(), query: Some(query.id.clone()) });
        let command = Some(Command::Vote { answer, rating });
        Some(self.incoming_in(message.chat(), topic, &query.from, command, String::new(), reply))
    }

    /// What `from` writes or clicks in `chat` (and forum `topic`), as the router sees it.
    fn incoming_in(
        &self,
        chat: &teloxide::types::Chat,
        topic: Option<ThreadId>,
        from: &User,
        command: Option<Command>,
        text: String,
        reply: Box<dyn ReplySink>,
    ) -> Incoming {
        Incoming {
            bot: self.name.clone(),
            conversation: conversation_key(chat.id, topic),
            channel: chat.id.to_string(),
            parent_channel: None,
            private: chat.is_private(),
            author: Author { id: from.id.to_string(), name: from.full_name(), roles: vec![] },
            command,
            text,
            reply,
        }
    }
}

/// The forum topic a message was written in. Outside forums `message_thread_id` marks reply
/// threads too, which are no place of their own; only `is_topic_message` means a topic.
fn forum_topic(msg: &Message) -> Option<ThreadId> {
    msg.thread_id.filter(|_| msg.is_topic_message)
}

/// A forum topic is a conversation of its own, apart from General and the other topics.
fn conversation_key(chat: ChatId, topic: Option<ThreadId>) -> ConversationKey {
    ConversationKey(match topic {
        Some(ThreadId(MessageId(topic))) => format!("telegram:{chat}:{topic}"),
        None => format!("telegram:{chat}"),
    })
}

/// The message this one answers. In a topic, Telegram makes every message reply to the
/// topic's first message: that is where it was written, not whom it answers.
fn replied_message(msg: &Message, topic: Option<ThreadId>) -> Option<&Message> {
    msg.reply_to_message().filter(|replied| topic != Some(ThreadId(replied.id)))
}

/// The 👍 and 👎 under an answer, each carrying the answer's id.
fn vote_buttons(answer: &str) -> InlineKeyboardMarkup {
    let button = |label: &str, rating| InlineKeyboardButton::callback(label, vote_button_data(rating, answer));
    InlineKeyboardMarkup::new([[button("👍", Rating::Up), button("👎", Rating::Down)]])
}

/// The answer a message of the bot's is part of, named by its vote buttons (Telegram hands
/// a replied-to message over with its buttons); `None` for any other message.
fn answer_of(msg: &Message) -> Option<String> {
    let buttons = msg.reply_markup()?.inline_keyboard.iter().flatten();
    buttons
        .filter_map(|button| match &button.kind {
            InlineKeyboardButtonKind::CallbackData(data) => parse_vote_button_data(data),
            _ => None,
        })
        .map(|(_, answer)| answer)
        .next()
}

/// Answers a callback query, which stops the spinner on the clicked button and shows
/// `text` (cut to Telegram's 200 characters), if any, as a notice.
async fn answer_click(bot: Bot, query: CallbackQueryId, text: Option<String>) -> Result<(), RequestError> {
    let text = text.map(|t| cut(&isolate_ltr_runs(&t), CLICK_ANSWER_LIMIT));
    let answering = || {
        let mut request = bot.answer_callback_query(query.clone());
        if let Some(text) = &text {
            request = request.text(text.clone());
        }
        request.send()
    };
    let answered = with_retries(TelegramChat::classify, answering).await.map(drop);
    if let Err(error) = &answered {
        warn!(%error, "answering a button click failed");
    }
    answered
}

/// `text` in at most `limit` characters, an ellipsis marking a cut.
fn cut(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text.to_string();
    }
    text.chars().take(limit - 1).chain(['…']).collect()
}

/// Where what the router says about a click goes: the answer to its callback query. A
/// query is answered once; Telegram refuses a second answer, so later words are dropped,
/// and a query nobody answered is answered without a word when its sink goes.
struct ClickAnswer {
    bot: Bot,
    /// Until answered.
    query: Option<CallbackQueryId>,
}

impl ClickAnswer {
    async fn answer(&mut self, text: &str) -> anyhow::Result<()> {
        match self.query.take() {
            Some(query) => Ok(answer_click(self.bot.clone(), query, Some(text.to_string())).await?),
            None => {
                debug!(text, "a click was answered already; not said");
                Ok(())
            }
        }
    }
}

#[async_trait]
impl ReplySink for ClickAnswer {
    async fn typing(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn update(&mut self, _: &str) -> anyhow::Result<()> {
        Ok(())
    }

    async fn finish(&mut self, text: &str, _: &[SourceRef]) -> anyhow::Result<()> {
        self.answer(text).await
    }

    async fn say(&mut self, text: &str) -> anyhow::Result<()> {
        self.answer(text).await
    }
}

impl Drop for ClickAnswer {
    fn drop(&mut self) {
        let Some(query) = self.query.take() else { return };
        // Outside a runtime (a test dropping it) there is nobody to answer with.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(answer_click(self.bot.clone(), query, None));
        }
    }
}

/// Doubling waits between failed connection attempts, from half a second up to 30 s.
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(Duration::from_millis(500))
    }
}

impl Backoff {
    async fn wait(&mut self, shutdown: &CancellationToken) {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(self.0) => {}
        }
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
    }
}

/// If `text` starts with `/name` or `/name@bot` (this bot), returns true and the rest.
fn strip_command<'a>(text: &'a str, name: &str, bot: &str) -> (bool, &'a str) {
    let trimmed = text.trim_start();
    let word_end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
    let (word, rest) = trimmed.split_at(word_end);
    let Some(word) = word.strip_prefix('/') else {
        return (false, text);
    };
    let (cmd, target) = word.split_once('@').map_or((word, None), |(c, t)| (c, Some(t)));
    let for_me = target.is_none_or(|t| t.eq_ignore_ascii_case(bot));
    if cmd.eq_ignore_ascii_case(name) && for_me {
        (true, rest)
    } else {
        (false, text)
    }
}

/// A known command meant for this bot: `/reset`, or `/reset@thisbot` (not `@otherbot`).
fn command_for_me(text: &str, bot: &str) -> Option<Command> {
    let word = text.split_whitespace().next()?;
    if let Some((_, target)) = word.split_once('@') {
        if !target.eq_ignore_ascii_case(bot) {
            return None;
        }
    }
    Command::parse(word)
}

/// Telegram usernames are letters, digits and underscores.
fn is_username_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Where `@username` stands in `text` as a whole word, ASCII case-insensitively: `@lorebot`
/// in "hi @LoreBot!", but not in `@lorebot_admin` or `@lorebotx`, which are other accounts.
fn mention_spans(text: &str, username: &str) -> Vec<Range<usize>> {
    // ASCII lowercasing keeps byte offsets, so positions found in `lower` cut `text`.
    let lower = text.to_ascii_lowercase();
    let needle = format!("@{}", username.to_ascii_lowercase());
    lower
        .match_indices(&needle)
        .map(|(start, _)| start..start + needle.len())
        .filter(|span| {
            let before = text[..span.start].chars().next_back();
            let after = text[span.end..].chars().next();
            !before.is_some_and(is_username_char) && !after.is_some_and(is_username_char)
        })
        .collect()
}

fn mentions(text: &str, username: &str) -> bool {
    !mention_spans(text, username).is_empty()
}

/// The question without the bot's mentions. A one-line question has its spaces collapsed;
/// several lines (pasted code) keep theirs.
fn remove_mentions(text: &str, username: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for span in mention_spans(text, username) {
        out.push_str(&text[last..span.start]);
        last = span.end;
    }
    out.push_str(&text[last..]);
    if out.contains('\n') {
        out.trim().to_string()
    } else {
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// Splits at Telegram's limit, counted the way Telegram counts (UTF-16 code units).
fn split_for_telegram(text: &str) -> Vec<String> {
    let mut limit = LIMIT;
    loop {
        let pieces = split_message(text, limit);
        if limit <= 512 || pieces.iter().all(|p| p.encode_utf16().count() <= LIMIT) {
            return pieces;
        }
        limit = limit * 3 / 4;
    }
}

/// The Bot API calls that stream one answer into a chat.
struct TelegramChat {
    bot: Bot,
    chat: ChatId,
    /// A forum topic: every message and chat action must name it, or it lands in General.
    topic: Option<ThreadId>,
    /// In groups, the first message of the answer replies to the question.
    reply_to: Option<MessageId>,
}

#[async_trait]
impl Platform for TelegramChat {
    type MessageId = MessageId;
    type Error = RequestError;
    const LIMIT: usize = LIMIT;

    /// Split before rendering: tags do not count against the limit, and a cut must not fall
    /// inside one.
    fn pieces(text: &str) -> Vec<String> {
        split_for_telegram(text).iter().map(|piece| telegram_html(piece)).collect()
    }

    fn measure(html: &str) -> usize {
        visible_len(html)
    }

    fn sources_heading() -> String {
        "<b>Sources</b>".into()
    }

    fn source_line(s: &SourceRef) -> String {
        escape_html(&format!("[{}] {} ({})", s.number, s.source, s.location))
    }

    fn classify(error: &RequestError) -> Failure {
        match error {
            RequestError::RetryAfter(after) => {
                Failure::RateLimited { retry_after: Some(after.duration().min(LONGEST_RETRY_AFTER)) }
            }
            RequestError::Api(ApiError::MessageNotModified) => Failure::NotModified,
            // Timeouts and dropped connections; a proxy's HTML error page in place of JSON.
            RequestError::Network(_) | RequestError::Io(_) | RequestError::InvalidJson { .. } => Failure::Transient,
            RequestError::Api(ApiError::Unknown(description)) if is_server_error(description) => Failure::Transient,
            _ => Failure::Permanent,
        }
    }

    fn place(&self) -> String {
        self.chat.to_string()
    }

    async fn send_typing(&self) -> Result<(), RequestError> {
        let mut request = self.bot.send_chat_action(self.chat, ChatAction::Typing);
        if let Some(topic) = self.topic {
            request = request.message_thread_id(topic);
        }
        request.send().await.map(drop)
    }

    /// The Bot API has no idempotency key: a send whose response is lost after Telegram
    /// took it is sent again (see docs/RELIABILITY.md).
    async fn post(&self, html: &str, first: bool, _: PostKey, votes: Option<&str>) -> Result<MessageId, RequestError> {
        let mut request = self.bot.send_message(self.chat, html).parse_mode(ParseMode::Html);
        if let Some(answer) = votes {
            request = request.reply_markup(vote_buttons(answer));
        }
        if let Some(topic) = self.topic {
            request = request.message_thread_id(topic);
        }
        if let Some(question) = self.reply_to.filter(|_| first) {
            request = request.reply_parameters(ReplyParameters::new(question).allow_sending_without_reply());
        }
        Ok(request.send().await?.id)
    }

    /// An edit without `votes` leaves no buttons: Telegram drops a keyboard that an edit
    /// does not name again.
    async fn edit(&self, id: MessageId, html: &str, votes: Option<&str>) -> Result<(), RequestError> {
        let mut request = self.bot.edit_message_text(self.chat, id, html).parse_mode(ParseMode::Html);
        if let Some(answer) = votes {
            request = request.reply_markup(vote_buttons(answer));
        }
        request.send().await.map(drop)
    }

    async fn delete(&self, id: MessageId) -> Result<(), RequestError> {
        match self.bot.delete_message(self.chat, id).send().await {
            // Deleted already, by someone else: as good as done.
            Err(RequestError::Api(ApiError::MessageToDeleteNotFound)) => Ok(()),
            result => result.map(drop),
        }
    }
}

/// Whether the Bot API's error text is a 5xx's: teloxide keeps the text, not the status.
fn is_server_error(description: &str) -> bool {
    ["Internal Server Error", "Bad Gateway", "Service Unavailable", "Gateway Timeout"]
        .iter()
        .any(|server| description.starts_with(server))
}

/// Length Telegram counts for rendered HTML: tags dropped, entities one unit each. Only
/// meant for HTML this module made (no `<` or `>` inside attribute values).
fn visible_len(html: &str) -> usize {
    let mut len = 0;
    let mut in_tag = false;
    let mut in_entity = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if in_tag => {}
            '&' => {
                in_entity = true;
                len += 1;
            }
            ';' if in_entity => in_entity = false,
            _ if in_entity => {}
            _ => len += c.len_utf16(),
        }
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_retry_after_waits_fifteen_minutes_at_most() {
        let forever = RequestError::RetryAfter(teloxide::types::Seconds::from_seconds(u32::MAX));
        assert_eq!(TelegramChat::classify(&forever), Failure::RateLimited { retry_after: Some(LONGEST_RETRY_AFTER) });
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let cfg: TelegramConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg.token_env, "TELEGRAM_TOKEN");
        assert_eq!(cfg.poll_timeout_secs, 30);
        assert!(serde_json::from_str::<TelegramConfig>(r#"{"api": "x"}"#).is_err());
    }

    #[test]
    fn ask_is_stripped_only_when_meant_for_this_bot() {
        assert_eq!(strip_command("/ask what is lore?", "ask", "LoreBot"), (true, " what is lore?"));
        assert_eq!(strip_command("/ask@lorebot why", "ask", "LoreBot"), (true, " why"));
        assert!(!strip_command("/ask@other why", "ask", "LoreBot").0);
        assert!(!strip_command("/asked", "ask", "LoreBot").0);
        assert!(!strip_command("ask me", "ask", "LoreBot").0);
    }

    #[test]
    fn commands_for_other_bots_are_ignored() {
        assert_eq!(command_for_me("/reset", "LoreBot"), Some(Command::Reset));
        assert_eq!(command_for_me("/reset@lorebot", "LoreBot"), Some(Command::Reset));
        assert_eq!(command_for_me("/reset@other_bot", "LoreBot"), None);
        assert_eq!(command_for_me("hello", "LoreBot"), None);
    }

    #[test]
    fn mention_is_removed_case_insensitively() {
        assert_eq!(remove_mentions("@LoreBot  what is  it?", "lorebot"), "what is it?");
        assert_eq!(remove_mentions("hi @lorebot\ncode", "LoreBot"), "hi \ncode");
    }

    #[test]
    fn mention_is_the_exact_username_as_a_whole_word() {
        assert!(mentions("hi @LoreBot!", "lorebot"));
        assert!(mentions("@lorebot", "LoreBot"));
        assert!(mentions("(@LOREBOT) why?", "lorebot"));
        assert!(mentions("@lorebot_admin and @lorebot, both", "lorebot"));
        assert!(!mentions("ask @lorebot_admin", "lorebot"));
        assert!(!mentions("ask @lorebotx", "lorebot"));
        assert!(!mentions("ask @lorebot2", "lorebot"));
        assert!(!mentions("mail me at me@lorebot", "lorebot"));
        assert!(!mentions("ask @lore", "lorebot"));
    }

    #[test]
    fn only_whole_word_mentions_are_removed() {
        assert_eq!(remove_mentions("hi @LoreBot! and @lorebot_admin", "lorebot"), "hi ! and @lorebot_admin");
        assert_eq!(remove_mentions("@lorebotx @LoreBot what?", "LoreBot"), "@lorebotx what?");
        assert_eq!(remove_mentions("café @lorebot über", "lorebot"), "café über");
    }

    fn forum_chat() -> serde_json::Value {
        serde_json::json!({"id": -100_500, "type": "supergroup", "title": "Readers", "is_forum": true})
    }

    /// A group message as the Bot API sends it, with `extra` fields merged in.
    fn group_message(extra: serde_json::Value) -> Message {
        let mut json = serde_json::json!({
            "message_id": 20, "date": 1_767_225_600, "text": "hi", "chat": forum_chat(),
            "from": {"id": 42, "is_bot": false, "first_name": "Ann"},
        });
        json.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(json).unwrap()
    }

    fn sent_by(id: i64, message_id: i32) -> serde_json::Value {
        serde_json::json!({
            "message_id": message_id, "date": 1_767_225_500, "text": "earlier", "chat": forum_chat(),
            "from": {"id": id, "is_bot": true, "first_name": "Lore", "username": "LoreBot"},
        })
    }

    #[test]
    fn a_forum_topic_is_a_conversation_of_its_own() {
        let in_topic = group_message(serde_json::json!({"message_thread_id": 7, "is_topic_message": true}));
        assert_eq!(conversation_key(in_topic.chat.id, forum_topic(&in_topic)).0, "telegram:-100500:7");
        let in_general = group_message(serde_json::json!({}));
        assert_eq!(conversation_key(in_general.chat.id, forum_topic(&in_general)).0, "telegram:-100500");
        // In an ordinary supergroup a reply carries the id of the thread of replies it is in.
        let reply_thread =
            group_message(serde_json::json!({"message_thread_id": 7, "reply_to_message": sent_by(1, 7)}));
        assert_eq!(forum_topic(&reply_thread), None);
    }

    #[test]
    fn the_first_message_of_a_topic_is_not_what_its_messages_reply_to() {
        let topic = serde_json::json!({"message_thread_id": 7, "is_topic_message": true});
        let mut plain = topic.clone();
        plain["reply_to_message"] = sent_by(1, 7);
        let plain = group_message(plain);
        assert!(replied_message(&plain, forum_topic(&plain)).is_none());
        let mut reply = topic;
        reply["reply_to_message"] = sent_by(1, 12);
        let reply = group_message(reply);
        assert_eq!(replied_message(&reply, forum_topic(&reply)).map(|m| m.id), Some(MessageId(12)));
    }

    #[test]
    fn a_message_names_its_answer_by_its_vote_buttons_only() {
        let keyboard = serde_json::to_value(vote_buttons("3fa2c1d4e5b6")).unwrap();
        assert_eq!(keyboard["inline_keyboard"][0][1]["callback_data"], "vote:down:3fa2c1d4e5b6");
        let mut answer = sent_by(1, 12);
        answer["reply_markup"] = keyboard;
        let answer: Message = serde_json::from_value(answer).unwrap();
        assert_eq!(answer_of(&answer).as_deref(), Some("3fa2c1d4e5b6"));
        let plain: Message = serde_json::from_value(sent_by(1, 13)).unwrap();
        assert_eq!(answer_of(&plain), None);
        let mut other = sent_by(1, 14);
        other["reply_markup"] = serde_json::json!({"inline_keyboard": [[
            {"text": "Docs", "url": "https://example.org/"}, {"text": "More", "callback_data": "more:1"},
        ]]});
        assert_eq!(answer_of(&serde_json::from_value(other).unwrap()), None);
    }

    #[test]
    fn a_click_answer_is_cut_to_telegrams_limit() {
        assert_eq!(cut("Thanks: noted 👎.", CLICK_ANSWER_LIMIT), "Thanks: noted 👎.");
        let long = cut(&"é".repeat(300), CLICK_ANSWER_LIMIT);
        assert_eq!(long.chars().count(), CLICK_ANSWER_LIMIT);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn visible_length_ignores_tags_and_counts_entities_once() {
        assert_eq!(visible_len("<b>a&lt;b</b>"), 3);
        assert_eq!(visible_len("<pre>x</pre>😀"), 3);
    }

    #[test]
    fn a_hebrew_file_name_in_a_source_is_isolated_then_escaped() {
        let s = crate::stream::sources_block::<TelegramChat>(&[SourceRef {
            number: 2,
            source: "מדריך & הערות.txt".into(),
            location: "lines 3-4".into(),
            id: String::new(),
        }]);
        assert_eq!(s, "\n\n<b>Sources</b>\n[2] \u{2068}מדריך &amp; הערות\u{2069}.txt (lines 3-4)");
    }

    #[test]
    fn split_counts_utf16_units() {
        let text = "😀".repeat(3000);
        let pieces = split_for_telegram(&text);
        assert!(pieces.len() >= 2);
        assert!(pieces.iter().all(|p| p.encode_utf16().count() <= LIMIT));
        assert_eq!(pieces.concat(), text);
    }
}
