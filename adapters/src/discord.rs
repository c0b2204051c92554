//! Discord through serenity: the gateway brings messages and slash commands, REST carries
//! the answers. Serenity's shard runner reconnects and resumes a dropped gateway by itself.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use serde::{Deserialize, Deserializer};
use serenity::all::{
    ChannelId, ClientBuilder, Command as AppCommand, CommandInteraction, Context, CreateAllowedMentions, CreateCommand,
    CreateInteractionResponseFollowup, CreateMessage, EditInteractionResponse, EditMessage, EventHandler,
    GatewayIntents, GuildId, Http, HttpBuilder, Interaction, Message, MessageId, Ready, RoleId, User,
};
use serenity::builder::Builder as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::text::{escape_discord, split_message, EditThrottle, Secret};
use crate::{Adapter, Author, Command, ConversationKey, Incoming, ReplySink, SourceRef};

/// Discord allows 2000 characters per message.
const LIMIT: usize = 2000;
/// How often a 429 is retried before the request is given up.
const MAX_RETRIES: u32 = 4;

/// The `discord:` section of a bot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    /// Environment variable that holds the bot token.
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// Base URL of a REST proxy (twilight-http-proxy, or a test server) used instead of
    /// `https://discord.com`; serenity's own rate limiter is then off and the proxy does it.
    #[serde(default)]
    pub api_url: Option<String>,
    /// Gateway websocket URL to use instead of the one `GET /gateway` returns.
    #[serde(default)]
    pub gateway_url: Option<String>,
    /// Channel (or thread) ids where the bot answers every message, not only mentions.
    #[serde(default, deserialize_with = "snowflakes")]
    pub respond_to_all: Vec<u64>,
    /// Guild ids to register the slash commands in (instant); empty registers them globally.
    #[serde(default, deserialize_with = "snowflakes")]
    pub command_guilds: Vec<u64>,
    /// Least time between two edits of streamed answers in one channel, in milliseconds
    /// (Discord allows about 5 edits per 5 seconds per channel).
    #[serde(default = "default_edit_interval_ms")]
    pub edit_interval_ms: u64,
}

fn default_token_env() -> String {
    "DISCORD_TOKEN".into()
}

fn default_edit_interval_ms() -> u64 {
    1200
}

/// Snowflakes written as numbers or as strings (both are common in YAML).
fn snowflakes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Num(u64),
        Text(String),
    }
    Vec::<Id>::deserialize(d)?
        .into_iter()
        .map(|id| match id {
            Id::Num(n) => Ok(n),
            Id::Text(s) => s.trim().parse().map_err(serde::de::Error::custom),
        })
        .collect()
}

/// One bot's connection to Discord.
#[derive(Debug)]
pub struct DiscordAdapter {
    bot: String,
    cfg: DiscordConfig,
    token: Secret,
}

impl DiscordAdapter {
    pub fn new(bot_name: &str, cfg: &DiscordConfig, token: String) -> anyhow::Result<Self> {
        let token = token.trim().to_string();
        anyhow::ensure!(!token.is_empty(), "the Discord token (${}) is empty", cfg.token_env);
        Ok(Self { bot: bot_name.to_string(), cfg: cfg.clone(), token: Secret::new(token) })
    }
}

#[async_trait]
impl Adapter for DiscordAdapter {
    async fn run(self: Box<Self>, inbox: mpsc::Sender<Incoming>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut http = HttpBuilder::new(self.token.expose());
        if let Some(url) = &self.cfg.api_url {
            // With the rate limiter on, serenity ignores the proxy.
            http = http.proxy(url.trim_end_matches('/')).ratelimiter_disabled(true);
        }
        let mut http = http.build();
        http.default_allowed_mentions = Some(no_mentions());
        let intents = GatewayIntents::GUILDS
            | GatewayIntents::GUILD_MESSAGES
            | GatewayIntents::DIRECT_MESSAGES
            | GatewayIntents::MESSAGE_CONTENT;
        let handler = Handler {
            bot: self.bot.clone(),
            inbox,
            respond_to_all: self.cfg.respond_to_all.iter().copied().collect(),
            command_guilds: self.cfg.command_guilds.clone(),
            throttle: EditThrottle::new(Duration::from_millis(self.cfg.edit_interval_ms)),
            seen: Mutex::default(),
            commands_registered: AtomicBool::new(false),
        };
        let mut client = ClientBuilder::new_with_http(http, intents)
            .event_handler(handler)
            .await
            .context("building the Discord client")?;
        if let Some(url) = &self.cfg.gateway_url {
            *client.ws_url.lock().await = url.clone();
        }
        let shards = client.shard_manager.clone();
        info!(bot = %self.bot, "connecting to Discord");
        tokio::select! {
            result = client.start() => result.context("Discord gateway")?,
            () = shutdown.cancelled() => shards.shutdown_all().await,
        }
        Ok(())
    }
}

/// Nothing in an answer may ping anyone.
fn no_mentions() -> CreateAllowedMentions {
    CreateAllowedMentions::new()
}

struct Handler {
    bot: String,
    inbox: mpsc::Sender<Incoming>,
    respond_to_all: HashSet<u64>,
    command_guilds: Vec<u64>,
    throttle: EditThrottle,
    /// Recently handled message and interaction ids: an event replayed after a reconnect is
    /// not answered twice. A std Mutex is fine: held for a lookup, never across an await.
    seen: Mutex<RecentIds>,
    commands_registered: AtomicBool,
}

#[derive(Default)]
struct RecentIds {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl RecentIds {
    /// True the first time an id is offered.
    fn first_time(&mut self, id: u64) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > 1024 {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

#[async_trait]
impl EventHandler for Handler {
    async fn ready(&self, ctx: Context, ready: Ready) {
        info!(bot = %self.bot, user = %ready.user.name, "connected to Discord");
        if !self.commands_registered.swap(true, Ordering::SeqCst) {
            if let Err(error) = self.register_commands(&ctx).await {
                // Text commands still work; the bot keeps running.
                self.commands_registered.store(false, Ordering::SeqCst);
                warn!(bot = %self.bot, %error, "registering slash commands failed");
            }
        }
    }

    async fn message(&self, ctx: Context, msg: Message) {
        let me = ctx.cache.current_user().id;
        if msg.author.bot || msg.author.id == me {
            return;
        }
        let in_dm = msg.guild_id.is_none();
        let mentioned = msg.mentions.iter().any(|u| u.id == me)
            || msg.content.contains(&format!("<@{me}>"))
            || msg.content.contains(&format!("<@!{me}>"));
        let reply_to_me = msg.referenced_message.as_ref().is_some_and(|m| m.author.id == me);
        let everything = self.respond_to_all.contains(&msg.channel_id.get());
        if !(in_dm || mentioned || reply_to_me || everything) {
            return;
        }
        if !self.first_time(msg.id.get()) {
            debug!(bot = %self.bot, message = %msg.id, "already answered");
            return;
        }
        let text = strip_mention(&msg.content, me.get());
        let conversation =
            if in_dm { format!("discord:dm:{}", msg.author.id) } else { format!("discord:{}", msg.channel_id) };
        let sink = DiscordSink {
            http: ctx.http.clone(),
            target: Target::Channel { id: msg.channel_id, reply_to: (!in_dm).then_some(msg.id) },
            throttle: self.throttle.clone(),
            streaming: None,
            shown: String::new(),
        };
        let incoming = Incoming {
            bot: self.bot.clone(),
            conversation: ConversationKey(conversation),
            channel: msg.channel_id.to_string(),
            author: author(&msg.author, msg.member.as_ref().map(|m| m.roles.as_slice())),
            command: Command::parse(&text),
            text,
            reply: Box::new(sink),
        };
        self.forward(incoming).await;
    }

    async fn interaction_create(&self, ctx: Context, interaction: Interaction) {
        let Interaction::Command(cmd) = interaction else {
            return;
        };
        if cmd.user.bot || !self.first_time(cmd.id.get()) {
            return;
        }
        let Some(command) = Command::parse(&format!("/{}", cmd.data.name)) else {
            debug!(bot = %self.bot, name = %cmd.data.name, "unknown slash command");
            return;
        };
        // Discord wants an answer within 3 s: show "thinking" now, answer by editing it.
        if let Err(error) = retry_429(|| cmd.defer(&ctx.http)).await {
            warn!(bot = %self.bot, %error, "deferring a slash command failed");
            return;
        }
        let incoming = interaction_incoming(&self.bot, &cmd, command, ctx.http.clone(), &self.throttle);
        self.forward(incoming).await;
    }
}

fn interaction_incoming(
    bot: &str,
    cmd: &CommandInteraction,
    command: Command,
    http: Arc<Http>,
    throttle: &EditThrottle,
) -> Incoming {
    let conversation = match cmd.guild_id {
        Some(_) => format!("discord:{}", cmd.channel_id),
        None => format!("discord:dm:{}", cmd.user.id),
    };
    Incoming {
        bot: bot.to_string(),
        conversation: ConversationKey(conversation),
        channel: cmd.channel_id.to_string(),
        author: author(&cmd.user, cmd.member.as_ref().map(|m| m.roles.as_slice())),
        text: format!("/{}", cmd.data.name),
        command: Some(command),
        reply: Box::new(DiscordSink {
            http,
            target: Target::Interaction { token: cmd.token.clone(), original_used: false },
            throttle: throttle.clone(),
            streaming: None,
            shown: String::new(),
        }),
    }
}

/// The author as the daemon sees it; `roles` are the member's roles in a guild.
fn author(user: &User, roles: Option<&[RoleId]>) -> Author {
    Author {
        id: user.id.to_string(),
        name: user.global_name.clone().unwrap_or_else(|| user.name.clone()),
        roles: roles.unwrap_or_default().iter().map(ToString::to_string).collect(),
    }
}

impl Handler {
    fn first_time(&self, id: u64) -> bool {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).first_time(id)
    }

    async fn forward(&self, incoming: Incoming) {
        if self.inbox.send(incoming).await.is_err() {
            debug!(bot = %self.bot, "inbox closed; message dropped");
        }
    }

    async fn register_commands(&self, ctx: &Context) -> serenity::Result<()> {
        let commands = || {
            Command::ALL
                .iter()
                .map(|(_, name, about)| CreateCommand::new(*name).description(*about))
                .collect::<Vec<_>>()
        };
        if self.command_guilds.is_empty() {
            retry_429(|| AppCommand::set_global_commands(&ctx.http, commands())).await?;
        }
        for guild in &self.command_guilds {
            retry_429(|| GuildId::new(*guild).set_commands(&ctx.http, commands())).await?;
        }
        Ok(())
    }
}

/// Removes mentions of the bot (`<@id>`, `<@!id>`) and trims. A one-line question has its
/// spaces collapsed; several lines (pasted code) are kept as they are.
fn strip_mention(content: &str, me: u64) -> String {
    let stripped = content.replace(&format!("<@{me}>"), "").replace(&format!("<@!{me}>"), "");
    if stripped.contains('\n') {
        stripped.trim().to_string()
    } else {
        stripped.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// True when Discord answered 429 Too Many Requests.
fn rate_limited(error: &serenity::Error) -> bool {
    matches!(
        error,
        serenity::Error::Http(serenity::http::HttpError::UnsuccessfulRequest(resp))
            if resp.status_code.as_u16() == 429
    )
}

/// Runs a REST call, retrying it after a 429. Serenity's rate limiter (on when there is no
/// proxy) honours `retry_after` itself; without it the 429 comes back as an error whose
/// `retry_after` serenity does not keep, so the wait doubles from one second.
async fn retry_429<T, F, Fut>(mut call: F) -> serenity::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = serenity::Result<T>>,
{
    let mut wait = Duration::from_secs(1);
    let mut attempt = 0;
    loop {
        match call().await {
            Err(error) if attempt < MAX_RETRIES && rate_limited(&error) => {
                warn!(retry_in_ms = wait.as_millis() as u64, "Discord rate limit; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Where the answer to one question goes.
enum Target {
    /// A channel, thread or DM; in guilds the first message replies to the question.
    Channel { id: ChannelId, reply_to: Option<MessageId> },
    /// A slash command: the deferred response is edited, further pieces are follow-ups.
    Interaction { token: String, original_used: bool },
}

/// A message this sink sent.
#[derive(Clone, Copy)]
enum Sent {
    Message(MessageId),
    /// The interaction's original (deferred) response.
    Original,
}

struct DiscordSink {
    http: Arc<Http>,
    target: Target,
    throttle: EditThrottle,
    /// The message edited as the answer streams, once sent.
    streaming: Option<Sent>,
    /// What that message shows now: an edit that changes nothing is skipped.
    shown: String,
}

impl DiscordSink {
    /// Key of the edit schedule: one per channel (interactions have their own webhook limit).
    fn place(&self) -> String {
        match &self.target {
            Target::Channel { id, .. } => id.to_string(),
            Target::Interaction { token, .. } => token.clone(),
        }
    }

    async fn post(&mut self, content: &str) -> serenity::Result<Sent> {
        let http = &self.http;
        match &mut self.target {
            Target::Channel { id, reply_to } => {
                let mut builder = CreateMessage::new().content(content).allowed_mentions(no_mentions());
                // Only the first message of an answer is a reply.
                if let Some(question) = reply_to.take() {
                    builder = builder.reference_message((*id, question));
                }
                let msg = retry_429(|| id.send_message(http, builder.clone())).await?;
                Ok(Sent::Message(msg.id))
            }
            Target::Interaction { token, original_used } if !*original_used => {
                let builder = EditInteractionResponse::new().content(content).allowed_mentions(no_mentions());
                retry_429(|| builder.clone().execute(http, token.as_str())).await?;
                *original_used = true;
                Ok(Sent::Original)
            }
            Target::Interaction { token, .. } => {
                let builder = CreateInteractionResponseFollowup::new().content(content).allowed_mentions(no_mentions());
                let msg = retry_429(|| builder.clone().execute(http, (None, token.as_str()))).await?;
                Ok(Sent::Message(msg.id))
            }
        }
    }

    async fn edit(&self, sent: Sent, content: &str) -> serenity::Result<()> {
        let http = &self.http;
        match (&self.target, sent) {
            (Target::Channel { id, .. }, Sent::Message(mid)) => {
                let builder = EditMessage::new().content(content).allowed_mentions(no_mentions());
                retry_429(|| id.edit_message(http, mid, builder.clone())).await?;
            }
            (Target::Interaction { token, .. }, Sent::Original) => {
                let builder = EditInteractionResponse::new().content(content).allowed_mentions(no_mentions());
                retry_429(|| builder.clone().execute(http, token.as_str())).await?;
            }
            (Target::Interaction { token, .. }, Sent::Message(mid)) => {
                let builder = CreateInteractionResponseFollowup::new().content(content).allowed_mentions(no_mentions());
                retry_429(|| builder.clone().execute(http, (Some(mid), token.as_str()))).await?;
            }
            (Target::Channel { .. }, Sent::Original) => unreachable!("channels have no original"),
        }
        Ok(())
    }

    /// Shows `content` in the streamed message: edits it, or sends it when there is none yet
    /// or the edit failed (the message was deleted, say).
    async fn show(&mut self, content: &str) -> anyhow::Result<()> {
        if content == self.shown {
            return Ok(());
        }
        match self.streaming {
            Some(sent) => {
                if let Err(error) = self.edit(sent, content).await {
                    warn!(%error, "editing the answer failed; sending it anew");
                    self.streaming = Some(self.post(content).await?);
                }
            }
            None => self.streaming = Some(self.post(content).await?),
        }
        self.shown = content.to_string();
        Ok(())
    }
}

#[async_trait]
impl ReplySink for DiscordSink {
    async fn typing(&mut self) -> anyhow::Result<()> {
        if let Target::Channel { id, .. } = &self.target {
            retry_429(|| id.broadcast_typing(&self.http)).await?;
        }
        Ok(())
    }

    async fn update(&mut self, text_so_far: &str) -> anyhow::Result<()> {
        if text_so_far.trim().is_empty() || !self.throttle.try_acquire(&self.place()) {
            return Ok(());
        }
        let escaped = escape_discord(text_so_far);
        let first = split_message(&escaped, LIMIT).swap_remove(0);
        self.show(&first).await
    }

    async fn finish(&mut self, text: &str, sources: &[SourceRef]) -> anyhow::Result<()> {
        let mut full = escape_discord(text.trim_end());
        full.push_str(&format_sources(sources));
        // Discord refuses empty messages.
        let mut pieces = split_message(&full, LIMIT).into_iter().filter(|p| !p.trim().is_empty());
        if let Some(first) = pieces.next() {
            if self.streaming.is_some() {
                self.throttle.acquire(&self.place()).await;
            }
            self.show(&first).await?;
        }
        for piece in pieces {
            self.post(&piece).await?;
        }
        Ok(())
    }

    async fn say(&mut self, text: &str) -> anyhow::Result<()> {
        let pieces = split_message(&escape_discord(text), LIMIT);
        for piece in pieces.iter().filter(|p| !p.trim().is_empty()) {
            self.post(&piece).await?;
        }
        Ok(())
    }
}

/// The sources block in Discord markdown, empty when there are none.
fn format_sources(sources: &[SourceRef]) -> String {
    let mut out = String::new();
    if sources.is_empty() {
        return out;
    }
    out.push_str("\n\n**Sources**");
    for s in sources {
        out.push_str(&format!("\n\\[{}\\] {} ({})", s.number, escape_discord(&s.source), escape_discord(&s.location)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_ids_as_text_or_numbers() {
        let cfg: DiscordConfig =
            serde_json::from_str(r#"{"respond_to_all": [123, "456"], "command_guilds": ["7"]}"#).unwrap();
        assert_eq!(cfg.token_env, "DISCORD_TOKEN");
        assert_eq!(cfg.respond_to_all, vec![123, 456]);
        assert_eq!(cfg.command_guilds, vec![7]);
        assert!(serde_json::from_str::<DiscordConfig>(r#"{"tokn_env": "X"}"#).is_err());
    }

    #[test]
    fn token_is_not_in_debug_output() {
        let cfg: DiscordConfig = serde_json::from_str("{}").unwrap();
        let adapter = DiscordAdapter::new("b", &cfg, "very-secret-token".into()).unwrap();
        assert!(!format!("{adapter:?}").contains("very-secret-token"));
    }

    #[test]
    fn mention_is_stripped() {
        assert_eq!(strip_mention("<@42> what is  lore?", 42), "what is lore?");
        assert_eq!(strip_mention("hey <@!42>, why?", 42), "hey , why?");
        assert_eq!(strip_mention("<@42> look:\n```\ncode\n```", 42), "look:\n```\ncode\n```");
    }

    #[test]
    fn sources_are_escaped() {
        let s = format_sources(&[SourceRef { number: 1, source: "my_notes*.md".into(), location: "lines 1-2".into() }]);
        assert_eq!(s, "\n\n**Sources**\n\\[1\\] my\\_notes\\*.md (lines 1-2)");
    }
}
