//! Discord through serenity: the gateway brings messages and slash commands, REST carries
//! the answers. Serenity's shard runner reconnects and resumes a dropped gateway by itself.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use lore_core::Secret;
use serde::{Deserialize, Deserializer};
use serenity::all::{
    Cache, ChannelId, ChannelType, ClientBuilder, Command as AppCommand, CommandInteraction, Context,
    CreateAllowedMentions, CreateCommand, CreateInteractionResponseFollowup, CreateMessage, EditInteractionResponse,
    EditMessage, EventHandler, GatewayIntents, GuildChannel, GuildId, Http, HttpBuilder, Interaction, Message,
    MessageId, MessageReference, MessageReferenceKind, MessageType, Ready, RoleId, User, UserId,
};
use serenity::http::{ErrorResponse, HttpError, LightMethod, Request, Route};
use serenity::model::channel::Nonce;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::stream::{retry_after_secs, with_retries, Failure, Platform, PostKey, StreamingReply};
use crate::text::{escape_discord, split_message};
use crate::throttle::EditThrottle;
use crate::{Adapter, Author, Command, Connected, ConversationKey, Incoming, SourceRef};

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
    /// Longest a REST call may take before it counts as failed and is retried, in seconds.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
}

fn default_request_timeout_secs() -> u64 {
    15
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
    async fn run(
        self: Box<Self>,
        inbox: mpsc::Sender<Incoming>,
        shutdown: CancellationToken,
        connected: Connected,
    ) -> anyhow::Result<()> {
        // Serenity's default client waits for an answer forever: one lost response would
        // hold an answer (and its place in line) for good.
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(Duration::from_secs(self.cfg.request_timeout_secs))
            .build()
            .context("building the Discord HTTP client")?;
        let rest = Rest { client: client.clone(), auth: Secret::new(format!("Bot {}", self.token.expose())) };
        let mut http = HttpBuilder::new(self.token.expose()).client(client);
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
            connected,
            respond_to_all: self.cfg.respond_to_all.iter().copied().collect(),
            command_guilds: self.cfg.command_guilds.clone(),
            throttle: EditThrottle::new(Duration::from_millis(self.cfg.edit_interval_ms)),
            rest,
            seen: Mutex::new(Recent::new(RECENT_IDS)),
            parents: Mutex::new(Recent::new(KNOWN_CHANNELS)),
            parent_lookup: tokio::sync::Mutex::default(),
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

/// Message and interaction ids remembered to drop replays.
const RECENT_IDS: usize = 1024;
/// Channels whose thread parent is remembered: a bot in a few busy guilds sees a few
/// thousand channels and threads; one forgotten costs one more lookup.
const KNOWN_CHANNELS: usize = 4096;

struct Handler {
    bot: String,
    inbox: mpsc::Sender<Incoming>,
    /// Told at each READY: the gateway took the token and events flow.
    connected: Connected,
    respond_to_all: HashSet<u64>,
    command_guilds: Vec<u64>,
    throttle: EditThrottle,
    rest: Rest,
    /// Recently handled message and interaction ids: an event replayed after a reconnect is
    /// not answered twice. A std Mutex is fine: held for a lookup, never across an await.
    seen: Mutex<Recent<u64, ()>>,
    /// Each guild channel's thread parent (`None`: not a thread), once looked up.
    parents: Mutex<Recent<ChannelId, Option<ChannelId>>>,
    /// Held while a channel is looked up, so that messages racing into a new thread
    /// still cost one request.
    parent_lookup: tokio::sync::Mutex<()>,
    commands_registered: AtomicBool,
}

/// A map that keeps only its `capacity` newest entries.
struct Recent<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    capacity: usize,
}

impl<K: Copy + Eq + Hash, V: Copy> Recent<K, V> {
    fn new(capacity: usize) -> Self {
        Self { map: HashMap::new(), order: VecDeque::new(), capacity }
    }

    fn get(&self, key: &K) -> Option<V> {
        self.map.get(key).copied()
    }

    /// Adds `key` unless it is already there; true when it was new.
    fn insert(&mut self, key: K, value: V) -> bool {
        if self.map.contains_key(&key) {
            return false;
        }
        self.map.insert(key, value);
        self.order.push_back(key);
        if self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.map.remove(&oldest);
            }
        }
        true
    }
}

/// A poisoned lock only means another event's task panicked; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl EventHandler for Handler {
    async fn ready(&self, ctx: Context, ready: Ready) {
        info!(bot = %self.bot, user = %ready.user.name, "connected to Discord");
        self.connected.now();
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
        if !self.is_for_me(&msg, me) {
            return;
        }
        if !self.first_time(msg.id.get()) {
            debug!(bot = %self.bot, message = %msg.id, "already answered");
            return;
        }
        let in_dm = msg.guild_id.is_none();
        let parent = self.thread_parent(&ctx, &msg).await;
        let text = strip_mention(&msg.content, me.get());
        let conversation =
            if in_dm { format!("discord:dm:{}", msg.author.id) } else { format!("discord:{}", msg.channel_id) };
        let target = Target::Channel { id: msg.channel_id, reply_to: (!in_dm).then_some(msg.id) };
        let sink = self.sink(&ctx, target);
        let incoming = Incoming {
            bot: self.bot.clone(),
            conversation: ConversationKey(conversation),
            channel: msg.channel_id.to_string(),
            parent_channel: parent.map(|p| p.to_string()),
            private: in_dm,
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
        if let Err(error) = with_retries(classify_serenity, || cmd.defer(&ctx.http)).await {
            warn!(bot = %self.bot, %error, "deferring a slash command failed");
            return;
        }
        let sink = self.sink(&ctx, Target::Interaction { token: cmd.token.clone() });
        let incoming = interaction_incoming(&self.bot, &cmd, command, sink);
        self.forward(incoming).await;
    }
}

fn interaction_incoming(
    bot: &str,
    cmd: &CommandInteraction,
    command: Command,
    sink: StreamingReply<DiscordReply>,
) -> Incoming {
    let conversation = match cmd.guild_id {
        Some(_) => format!("discord:{}", cmd.channel_id),
        None => format!("discord:dm:{}", cmd.user.id),
    };
    // The interaction carries its channel, so a thread's parent costs no lookup here.
    let parent = cmd.channel.as_ref().filter(|c| is_thread(c.kind)).and_then(|c| c.parent_id);
    Incoming {
        bot: bot.to_string(),
        conversation: ConversationKey(conversation),
        channel: cmd.channel_id.to_string(),
        parent_channel: parent.map(|p| p.to_string()),
        private: cmd.guild_id.is_none(),
        author: author(&cmd.user, cmd.member.as_ref().map(|m| m.roles.as_slice())),
        text: format!("/{}", cmd.data.name),
        command: Some(command),
        reply: Box::new(sink),
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

/// Only what people write is a question: joins, pins, "thread created" and the like are
/// messages too, and may even mention the bot.
fn is_written_by_a_person(kind: MessageType) -> bool {
    matches!(kind, MessageType::Regular | MessageType::InlineReply)
}

fn is_thread(kind: ChannelType) -> bool {
    matches!(kind, ChannelType::PublicThread | ChannelType::PrivateThread | ChannelType::NewsThread)
}

/// The channel a thread (or forum post) was opened in; `None` for other channels, whose
/// `parent_id` is their category.
fn parent_if_thread(channel: &GuildChannel) -> Option<ChannelId> {
    channel.parent_id.filter(|_| is_thread(channel.kind))
}

/// What serenity's cache knows of `channel` (filled by the gateway's guild and thread
/// events): `None` when it has not seen it.
fn cached_parent(cache: &Cache, guild: GuildId, channel: ChannelId) -> Option<Option<ChannelId>> {
    let guild = cache.guild(guild)?;
    let found = guild.channels.get(&channel).or_else(|| guild.threads.iter().find(|t| t.id == channel))?;
    Some(parent_if_thread(found))
}

impl Handler {
    fn sink(&self, ctx: &Context, target: Target) -> StreamingReply<DiscordReply> {
        let reply = DiscordReply { http: ctx.http.clone(), rest: self.rest.clone(), target };
        StreamingReply::new(reply, self.throttle.clone())
    }

    fn first_time(&self, id: u64) -> bool {
        lock(&self.seen).insert(id, ())
    }

    /// A person's message in a DM, or one that mentions the bot, replies to it, or stands in
    /// a channel where the bot answers everything.
    fn is_for_me(&self, msg: &Message, me: UserId) -> bool {
        if !is_written_by_a_person(msg.kind) || msg.author.bot || msg.author.id == me {
            return false;
        }
        let in_dm = msg.guild_id.is_none();
        let mentioned = msg.mentions.iter().any(|u| u.id == me)
            || msg.content.contains(&format!("<@{me}>"))
            || msg.content.contains(&format!("<@!{me}>"));
        let reply_to_me = msg.referenced_message.as_ref().is_some_and(|m| m.author.id == me);
        let everything = self.respond_to_all.contains(&msg.channel_id.get());
        in_dm || mentioned || reply_to_me || everything
    }

    /// The channel the message's thread or forum post was opened in, `None` elsewhere.
    /// Messages do not say whether their channel is a thread, so each channel is looked up
    /// once (serenity's cache, else `GET /channels/{id}`) and remembered.
    async fn thread_parent(&self, ctx: &Context, msg: &Message) -> Option<ChannelId> {
        let guild = msg.guild_id?;
        let channel = msg.channel_id;
        if let Some(known) = lock(&self.parents).get(&channel) {
            return known;
        }
        let _one_at_a_time = self.parent_lookup.lock().await;
        if let Some(known) = lock(&self.parents).get(&channel) {
            return known;
        }
        let parent = match cached_parent(&ctx.cache, guild, channel) {
            Some(parent) => parent,
            None => match with_retries(classify_serenity, || channel.to_channel(ctx)).await {
                Ok(found) => found.guild().as_ref().and_then(parent_if_thread),
                Err(error) => {
                    // Answered as a channel of its own this time; the next message asks again.
                    warn!(bot = %self.bot, %channel, %error, "looking up whether a channel is a thread failed");
                    return None;
                }
            },
        };
        lock(&self.parents).insert(channel, parent);
        parent
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
            with_retries(classify_serenity, || AppCommand::set_global_commands(&ctx.http, commands())).await?;
        }
        for guild in &self.command_guilds {
            with_retries(classify_serenity, || GuildId::new(*guild).set_commands(&ctx.http, commands())).await?;
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

/// Where the answer to one question goes.
enum Target {
    /// A channel, thread or DM; in guilds the first message replies to the question.
    Channel { id: ChannelId, reply_to: Option<MessageId> },
    /// A slash command: the deferred response is edited, further pieces are follow-ups.
    Interaction { token: String },
}

/// A message sent for an answer.
#[derive(Clone, Copy)]
enum Sent {
    Message(MessageId),
    /// The interaction's original (deferred) response.
    Original,
}

/// What the answers' REST calls need beside serenity's [`Http`]: they go out through the
/// same client, but their responses are read here (see [`DiscordReply::request`]).
#[derive(Clone)]
struct Rest {
    client: reqwest::Client,
    /// The `Authorization` header's value.
    auth: Secret,
}

/// Why a REST call for an answer failed.
#[derive(Debug, thiserror::Error)]
enum RestError {
    #[error("Discord refused the request as too many (429)")]
    RateLimited { retry_after: Option<Duration> },
    /// Boxed: serenity's error is large, and this travels in every `Result`.
    #[error("Discord REST: {0}")]
    Serenity(Box<serenity::Error>),
    #[error("Discord REST: {0}")]
    Network(#[from] reqwest::Error),
    #[error("Discord REST: {0}")]
    Body(#[from] serde_json::Error),
}

impl From<serenity::Error> for RestError {
    fn from(error: serenity::Error) -> Self {
        Self::Serenity(Box::new(error))
    }
}

/// The REST calls that stream one answer to its [`Target`].
struct DiscordReply {
    http: Arc<Http>,
    rest: Rest,
    target: Target,
}

/// A reply to the question that still goes out, as a plain message, when the question was
/// deleted meanwhile: by default Discord refuses it, and the answer would be lost.
fn reply_reference(channel: ChannelId, question: MessageId) -> MessageReference {
    MessageReference::new(MessageReferenceKind::Default, channel).message_id(question).fail_if_not_exists(false)
}

/// The part of a created message an answer needs.
#[derive(Deserialize)]
struct Created {
    id: MessageId,
}

impl DiscordReply {
    /// Sends one REST request. Serenity's own calls turn a 429 into an error that has lost
    /// how long to wait; behind a REST proxy (serenity's rate limiter off) that wait is all
    /// there is to go by, so the answers' calls read the response here.
    async fn request(
        &self,
        route: Route<'_>,
        method: LightMethod,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, RestError> {
        let request = Request::new(route, method).body(body);
        let response = match &self.http.ratelimiter {
            // It waits out 429s by itself.
            Some(limiter) => limiter.perform(request).await?,
            None => {
                let built = request.build(&self.rest.client, self.rest.auth.expose(), self.http.proxy.as_deref())?;
                self.rest.client.execute(built.build()?).await?
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if status.as_u16() == 429 {
            return Err(RestError::RateLimited { retry_after: retry_after(response).await });
        }
        let error = ErrorResponse::from_response(response, method.reqwest_method()).await;
        Err(serenity::Error::Http(HttpError::UnsuccessfulRequest(error)).into())
    }

    /// Creates a message; its id.
    async fn create<T: serde::Serialize>(&self, route: Route<'_>, body: &T) -> Result<MessageId, RestError> {
        let response = self.request(route, LightMethod::Post, Some(serde_json::to_vec(body)?)).await?;
        Ok(response.json::<Created>().await?.id)
    }

    /// Edits a message (Discord answers with it; nothing in it is needed).
    async fn update<T: serde::Serialize>(&self, route: Route<'_>, body: &T) -> Result<(), RestError> {
        self.request(route, LightMethod::Patch, Some(serde_json::to_vec(body)?)).await?;
        Ok(())
    }

    fn application(&self) -> Result<serenity::all::ApplicationId, RestError> {
        self.http
            .application_id()
            .ok_or_else(|| serenity::Error::Other("the application id is not known before READY").into())
    }

    fn interaction_route<'a>(&self, token: &'a str, sent: Option<Sent>) -> Result<Route<'a>, RestError> {
        let application_id = self.application()?;
        Ok(match sent {
            None => Route::WebhookFollowupMessages { application_id, token },
            Some(Sent::Original) => Route::WebhookOriginalInteractionResponse { application_id, token },
            Some(Sent::Message(message_id)) => Route::WebhookFollowupMessage { application_id, token, message_id },
        })
    }
}

/// How long a 429 asks to wait: the body's `retry_after` (seconds, with a fraction), else
/// the `Retry-After` header (whole seconds); capped (see [`retry_after_secs`]).
async fn retry_after(response: reqwest::Response) -> Option<Duration> {
    let header = response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.trim().parse::<f64>().ok());
    let body = response.json::<serde_json::Value>().await.ok().and_then(|b| b["retry_after"].as_f64());
    body.or(header).and_then(retry_after_secs)
}

fn is_not_found(error: &serenity::Error) -> bool {
    matches!(error, serenity::Error::Http(HttpError::UnsuccessfulRequest(r)) if r.status_code.as_u16() == 404)
}

fn classify_serenity(error: &serenity::Error) -> Failure {
    match error {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(response)) => match response.status_code.as_u16() {
            429 => Failure::RateLimited { retry_after: None },
            status if status >= 500 => Failure::Transient,
            _ => Failure::Permanent,
        },
        // Timeouts, refused and dropped connections.
        serenity::Error::Http(HttpError::Request(_)) => Failure::Transient,
        _ => Failure::Permanent,
    }
}

#[async_trait]
impl Platform for DiscordReply {
    type MessageId = Sent;
    type Error = RestError;
    /// Discord allows 2000 characters per message.
    const LIMIT: usize = 2000;

    fn pieces(text: &str) -> Vec<String> {
        split_message(&escape_discord(text), Self::LIMIT)
    }

    fn measure(message: &str) -> usize {
        message.chars().count()
    }

    fn sources_heading() -> String {
        "**Sources**".into()
    }

    fn source_line(s: &SourceRef) -> String {
        format!("\\[{}\\] {} ({})", s.number, escape_discord(&s.source), escape_discord(&s.location))
    }

    fn classify(error: &RestError) -> Failure {
        match error {
            RestError::RateLimited { retry_after } => Failure::RateLimited { retry_after: *retry_after },
            RestError::Serenity(error) => classify_serenity(error),
            RestError::Network(_) => Failure::Transient,
            // A success whose body did not arrive whole.
            RestError::Body(_) => Failure::Transient,
        }
    }

    /// One schedule per channel; interactions have their own webhook limit.
    fn place(&self) -> String {
        match &self.target {
            Target::Channel { id, .. } => id.to_string(),
            Target::Interaction { token } => token.clone(),
        }
    }

    async fn send_typing(&self) -> Result<(), RestError> {
        match &self.target {
            Target::Channel { id, .. } => Ok(id.broadcast_typing(&self.http).await?),
            // The deferred response already shows "thinking".
            Target::Interaction { .. } => Ok(()),
        }
    }

    /// In channels the key goes out as an enforced nonce: Discord returns the message it
    /// already made for a retry instead of posting it twice.
    async fn post(&self, content: &str, first: bool, key: PostKey, _votes: Option<&str>) -> Result<Sent, RestError> {
        match &self.target {
            Target::Channel { id, reply_to } => {
                let mut message = CreateMessage::new()
                    .content(content)
                    .allowed_mentions(no_mentions())
                    .nonce(Nonce::String(key.0.to_string()))
                    .enforce_nonce(true);
                if let Some(question) = reply_to.filter(|_| first) {
                    message = message.reference_message(reply_reference(*id, question));
                }
                let created = self.create(Route::ChannelMessages { channel_id: *id }, &message).await?;
                Ok(Sent::Message(created))
            }
            Target::Interaction { token } if first => {
                let edit = EditInteractionResponse::new().content(content).allowed_mentions(no_mentions());
                let route = self.interaction_route(token, Some(Sent::Original))?;
                self.update(route, &edit).await?;
                Ok(Sent::Original)
            }
            Target::Interaction { token } => {
                let follow_up =
                    CreateInteractionResponseFollowup::new().content(content).allowed_mentions(no_mentions());
                let created = self.create(self.interaction_route(token, None)?, &follow_up).await?;
                Ok(Sent::Message(created))
            }
        }
    }

    async fn edit(&self, sent: Sent, content: &str, _votes: Option<&str>) -> Result<(), RestError> {
        match &self.target {
            Target::Channel { id, .. } => {
                let Sent::Message(message_id) = sent else { unreachable!("channels have no original") };
                let edit = EditMessage::new().content(content).allowed_mentions(no_mentions());
                self.update(Route::ChannelMessage { channel_id: *id, message_id }, &edit).await?;
            }
            Target::Interaction { token } => {
                let edit = EditInteractionResponse::new().content(content).allowed_mentions(no_mentions());
                self.update(self.interaction_route(token, Some(sent))?, &edit).await?;
            }
        }
        Ok(())
    }

    async fn delete(&self, sent: Sent) -> Result<(), RestError> {
        let route = match (&self.target, sent) {
            (Target::Channel { id, .. }, Sent::Message(message_id)) => {
                Route::ChannelMessage { channel_id: *id, message_id }
            }
            (Target::Channel { .. }, Sent::Original) => unreachable!("channels have no original"),
            (Target::Interaction { token }, sent) => self.interaction_route(token, Some(sent))?,
        };
        match self.request(route, LightMethod::Delete, None).await {
            // Deleted already, by someone else: as good as done.
            Err(RestError::Serenity(error)) if is_not_found(&error) => Ok(()),
            result => result.map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::sources_block;

    #[test]
    fn a_retry_after_too_large_for_a_duration_waits_fifteen_minutes_and_nonsense_none() {
        // Duration::from_secs_f64 panics on 1e300: a platform (or a proxy) could take the
        // adapter down with one 429.
        assert_eq!(retry_after_secs(1e300), Some(crate::stream::LONGEST_RETRY_AFTER));
        assert_eq!(retry_after_secs(2.5), Some(Duration::from_millis(2500)));
        for nonsense in [f64::NAN, f64::INFINITY, -1.0] {
            assert_eq!(retry_after_secs(nonsense), None, "{nonsense}");
        }
    }

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
    fn mention_is_stripped() {
        assert_eq!(strip_mention("<@42> what is  lore?", 42), "what is lore?");
        assert_eq!(strip_mention("hey <@!42>, why?", 42), "hey , why?");
        assert_eq!(strip_mention("<@42> look:\n```\ncode\n```", 42), "look:\n```\ncode\n```");
    }

    #[test]
    fn recent_forgets_its_oldest_entries() {
        let mut recent = Recent::new(2);
        assert!(recent.insert(1, 'a'));
        assert!(!recent.insert(1, 'b'), "an id is new only once");
        assert!(recent.insert(2, 'b') && recent.insert(3, 'c'));
        assert_eq!((recent.get(&1), recent.get(&2), recent.get(&3)), (None, Some('b'), Some('c')));
    }

    fn channel(kind: u8, parent: u64) -> GuildChannel {
        serde_json::from_value(serde_json::json!({
            "id": "10", "type": kind, "guild_id": "1", "name": "c", "parent_id": parent.to_string(),
        }))
        .unwrap()
    }

    #[test]
    fn only_threads_have_a_parent_channel() {
        assert_eq!(parent_if_thread(&channel(11, 5)), Some(ChannelId::new(5)), "public thread or forum post");
        assert_eq!(parent_if_thread(&channel(12, 5)), Some(ChannelId::new(5)), "private thread");
        assert_eq!(parent_if_thread(&channel(0, 5)), None, "a text channel's parent is its category");
        assert_eq!(parent_if_thread(&channel(15, 5)), None, "the forum itself");
    }

    #[test]
    fn only_regular_messages_and_replies_are_questions() {
        assert!(is_written_by_a_person(MessageType::Regular));
        assert!(is_written_by_a_person(MessageType::InlineReply));
        for system in [6, 7, 18, 21, 24] {
            assert!(!is_written_by_a_person(MessageType::from(system)), "type {system}");
        }
    }

    #[test]
    fn reply_to_a_deleted_question_is_still_sent() {
        let reference = serde_json::to_value(reply_reference(ChannelId::new(3), MessageId::new(4))).unwrap();
        assert_eq!(reference["message_id"], "4");
        assert_eq!(reference["fail_if_not_exists"], false);
    }

    #[test]
    fn sources_are_escaped() {
        let s = sources_block::<DiscordReply>(&[SourceRef {
            number: 1,
            source: "my_notes*.md".into(),
            location: "lines 1-2".into(),
            id: String::new(),
        }]);
        assert_eq!(s, "\n\n**Sources**\n\\[1\\] my\\_notes\\*.md (lines 1-2)");
    }
}
