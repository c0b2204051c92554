//! Discord through serenity: the gateway brings messages and interactions, REST carries
//! the answers. Serenity's shard runner reconnects and resumes a dropped gateway by itself.
//!
//! An answer's last message carries 👍/👎 buttons naming the answer, so a click (even
//! after a restart) says which answer it judges. 👍 is thanked ephemerally; 👎 opens a
//! form asking what was wrong. Admins correct an answer with the message command
//! "Correct this answer" (a form for the right answer), or by replying `/correct …` to it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use lore_core::{parse_vote_button_data, vote_button_data, Rating, Secret};
use serde::{Deserialize, Deserializer};
use serenity::all::{
    ActionRowComponent, ButtonKind, ButtonStyle, Cache, ChannelId, ChannelType, ClientBuilder, Command as AppCommand,
    CommandInteraction, CommandType, ComponentInteraction, Context, CreateActionRow, CreateAllowedMentions,
    CreateButton, CreateCommand, CreateInputText, CreateInteractionResponse, CreateInteractionResponseFollowup,
    CreateInteractionResponseMessage, CreateMessage, CreateModal, EditInteractionResponse, EditMessage, EventHandler,
    GatewayIntents, GuildChannel, GuildId, Http, HttpBuilder, InputTextStyle, Interaction, InteractionId, Message,
    MessageId, MessageReference, MessageReferenceKind, MessageType, ModalInteraction, PartialChannel, Ready,
    ResolvedTarget, RoleId, User, UserId,
};
use serenity::http::{ErrorResponse, HttpError, LightMethod, Request, Route};
use serenity::model::channel::Nonce;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::bidi::isolate_ltr_runs;
use crate::stream::{retry_after_secs, with_retries, Failure, Platform, PostKey, StreamingReply};
use crate::text::{escape_discord, split_message};
use crate::throttle::EditThrottle;
use crate::{Adapter, Author, Command, Connected, ConversationKey, Incoming, ReplySink, SourceRef};

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

/// The message command admins correct an answer with: a slash command cannot name the
/// message it is about (`/correct …` written as a reply to the answer works too).
const CORRECT_THIS_ANSWER: &str = "Correct this answer";
/// The forms' custom ids name their answer: `why:ID` asks what was wrong with it,
/// `correct:ID` for the right answer to its question.
const WHY_FORM: &str = "why:";
const CORRECT_FORM: &str = "correct:";
const REASON_FIELD: &str = "reason";
const ANSWER_FIELD: &str = "answer";
const SOURCE_FIELD: &str = "source";
/// Most characters a form takes: as much as a reason or a correction is kept with.
const LONGEST_TYPED: u16 = 2000;
const NOT_AN_ANSWER: &str =
    "That is not one of my answers: use this on the last message of an answer of mine, the one with 👍/👎 under it.";
/// For a button, form or command this bot does not have (any more): Discord shows "this
/// interaction failed" to whoever gets no response at all.
const UNKNOWN_INTERACTION: &str = "Sorry, that does not do anything (any more).";

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
        let at = Asker::of_message(&msg);
        let parent = self.parent(&ctx, &at).await;
        let text = strip_mention(&msg.content, me.get());
        let command = match Command::parse(&text) {
            // The answer replied to is named by its buttons.
            Some(Command::Correct { .. }) => {
                Some(Command::Correct { answer: msg.referenced_message.as_deref().and_then(|m| answer_of(m, me)) })
            }
            command => command,
        };
        let reply_to = msg.guild_id.map(|_| msg.id);
        let sink = self.sink(&ctx, Target::Channel { id: msg.channel_id, reply_to });
        let incoming = self.incoming(&at, parent, command, text, Box::new(sink));
        self.forward(incoming).await;
    }

    async fn interaction_create(&self, ctx: Context, interaction: Interaction) {
        let Some(at) = Asker::of_interaction(&interaction) else {
            // Pings come only to an HTTP endpoint, and no command here autocompletes.
            return;
        };
        if at.user.bot || self.is_foreign(&ctx, &interaction) || !self.first_time(interaction.id().get()) {
            return;
        }
        let to = Interacted { id: interaction.id(), token: interaction.token().to_string() };
        match &interaction {
            Interaction::Command(cmd) => self.on_command(&ctx, &at, cmd, to).await,
            Interaction::Component(click) => self.on_click(&ctx, &at, click, to).await,
            Interaction::Modal(form) => self.on_form(&ctx, &at, form, to).await,
            _ => {}
        }
    }
}

/// Who wrote a message or used an interaction, and where: what an [`Incoming`] needs.
struct Asker<'a> {
    user: &'a User,
    /// Their roles in the guild; `None` outside one.
    roles: Option<&'a [RoleId]>,
    guild: Option<GuildId>,
    channel: ChannelId,
    /// The channel as an interaction describes it (a message describes none).
    described: Option<&'a PartialChannel>,
}

/// The asker of an interaction of any kind: the kinds share these fields, not a type.
macro_rules! asker_of {
    ($interaction:expr) => {
        Asker {
            user: &$interaction.user,
            roles: $interaction.member.as_ref().map(|m| m.roles.as_slice()),
            guild: $interaction.guild_id,
            channel: $interaction.channel_id,
            described: $interaction.channel.as_ref(),
        }
    };
}

impl<'a> Asker<'a> {
    fn of_message(msg: &'a Message) -> Self {
        Self {
            user: &msg.author,
            roles: msg.member.as_ref().map(|m| m.roles.as_slice()),
            guild: msg.guild_id,
            channel: msg.channel_id,
            described: None,
        }
    }

    fn of_interaction(interaction: &'a Interaction) -> Option<Self> {
        match interaction {
            Interaction::Command(cmd) => Some(asker_of!(cmd)),
            Interaction::Component(click) => Some(asker_of!(click)),
            Interaction::Modal(form) => Some(asker_of!(form)),
            _ => None,
        }
    }

    /// The channel's conversation, or in a DM the person's.
    fn conversation(&self) -> ConversationKey {
        ConversationKey(match self.guild {
            Some(_) => format!("discord:{}", self.channel),
            None => format!("discord:dm:{}", self.user.id),
        })
    }
}

/// The interaction to respond to.
struct Interacted {
    id: InteractionId,
    token: String,
}

/// What a form that was sent back is about.
#[derive(Debug, PartialEq)]
enum Form {
    /// What was wrong with this answer.
    Why(String),
    /// The right answer to this answer's question.
    Correct(String),
}

impl Form {
    fn parse(custom_id: &str) -> Option<Self> {
        // An answer id passes the check a vote button's id gets.
        let answer = |prefix: &str| {
            let id = custom_id.strip_prefix(prefix)?;
            parse_vote_button_data(&vote_button_data(Rating::Up, id)).map(|(_, id)| id)
        };
        answer(WHY_FORM).map(Self::Why).or_else(|| answer(CORRECT_FORM).map(Self::Correct))
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

/// The answer whose last message `msg` is: the id its 👍/👎 buttons carry. `None` for
/// other messages, and for anyone else's buttons.
fn answer_of(msg: &Message, me: UserId) -> Option<String> {
    if msg.author.id != me {
        return None;
    }
    msg.components.iter().flat_map(|row| &row.components).find_map(|component| match component {
        ActionRowComponent::Button(button) => match &button.data {
            ButtonKind::NonLink { custom_id, .. } => parse_vote_button_data(custom_id).map(|(_, answer)| answer),
            _ => None,
        },
        _ => None,
    })
}

/// One action row: 👍 and 👎 for `answer`.
fn vote_buttons(answer: &str) -> Vec<CreateActionRow> {
    let button = |rating, emoji: char| {
        CreateButton::new(vote_button_data(rating, answer)).emoji(emoji).style(ButtonStyle::Secondary)
    };
    vec![CreateActionRow::Buttons(vec![button(Rating::Up, '👍'), button(Rating::Down, '👎')])]
}

/// `builder` with the vote buttons of answer `votes`, if any (`add` is the builder's
/// `components`).
fn with_votes<B>(builder: B, votes: Option<&str>, add: fn(B, Vec<CreateActionRow>) -> B) -> B {
    match votes {
        Some(answer) => add(builder, vote_buttons(answer)),
        None => builder,
    }
}

/// The form a 👎 opens. The reason is optional: the 👎 counts without it.
fn why_form(answer: &str) -> CreateInteractionResponse {
    let reason = CreateInputText::new(InputTextStyle::Paragraph, "What was wrong? (optional)", REASON_FIELD)
        .required(false)
        .max_length(LONGEST_TYPED);
    let form = CreateModal::new(format!("{WHY_FORM}{answer}"), "What was wrong?")
        .components(vec![CreateActionRow::InputText(reason)]);
    CreateInteractionResponse::Modal(form)
}

/// The form "Correct this answer" opens.
fn correct_form(answer: &str) -> CreateInteractionResponse {
    let right = CreateInputText::new(InputTextStyle::Paragraph, "The right answer", ANSWER_FIELD)
        .placeholder("Or: none, when the documents do not cover the question")
        .max_length(LONGEST_TYPED);
    let source = CreateInputText::new(InputTextStyle::Short, "Where it is written (optional)", SOURCE_FIELD)
        .placeholder("A file name, such as guide.md")
        .required(false)
        .max_length(200);
    let fields = vec![CreateActionRow::InputText(right), CreateActionRow::InputText(source)];
    CreateInteractionResponse::Modal(
        CreateModal::new(format!("{CORRECT_FORM}{answer}"), CORRECT_THIS_ANSWER).components(fields),
    )
}

/// What was typed into a form's field; empty when it was left out.
fn field<'a>(form: &'a ModalInteraction, id: &str) -> &'a str {
    let typed = form.data.components.iter().flat_map(|row| &row.components).find_map(|component| match component {
        ActionRowComponent::InputText(input) if input.custom_id == id => input.value.as_deref(),
        _ => None,
    });
    typed.unwrap_or_default().trim()
}

/// A correction form as the router reads `/correct`: the answer, then `source: FILE`.
/// The command word keeps an answer that starts with `/` from being taken for one.
fn correction_text(answer: &str, source: &str) -> String {
    match source {
        "" => format!("/correct {answer}"),
        source => format!("/correct {answer}\nsource: {source}"),
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

/// Where the router's reply to a 👎 click goes: nowhere. The click's one response is the
/// form asking what was wrong; the form's own reply thanks the person.
struct AnsweredWithForm;

#[async_trait]
impl ReplySink for AnsweredWithForm {
    async fn typing(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn update(&mut self, _: &str) -> anyhow::Result<()> {
        Ok(())
    }

    async fn finish(&mut self, text: &str, _: &[SourceRef]) -> anyhow::Result<()> {
        self.say(text).await
    }

    async fn say(&mut self, text: &str) -> anyhow::Result<()> {
        debug!(text, "not shown: the 👎 was answered with the form");
        Ok(())
    }
}

impl Handler {
    fn sink(&self, ctx: &Context, target: Target) -> StreamingReply<DiscordReply> {
        let reply = DiscordReply { http: ctx.http.clone(), rest: self.rest.clone(), target };
        StreamingReply::new(reply, self.throttle.clone())
    }

    fn incoming(
        &self,
        at: &Asker<'_>,
        parent: Option<ChannelId>,
        command: Option<Command>,
        text: String,
        reply: Box<dyn ReplySink>,
    ) -> Incoming {
        Incoming {
            bot: self.bot.clone(),
            conversation: at.conversation(),
            channel: at.channel.to_string(),
            parent_channel: parent.map(|p| p.to_string()),
            private: at.guild.is_none(),
            author: author(at.user, at.roles),
            text,
            command,
            reply,
        }
    }

    fn first_time(&self, id: u64) -> bool {
        lock(&self.seen).insert(id, ())
    }

    /// Another application's interaction: a gateway brings only its own application's,
    /// so this is one shared by mistake; left to its owner.
    fn is_foreign(&self, ctx: &Context, interaction: &Interaction) -> bool {
        ctx.http.application_id().is_some_and(|me| me != interaction.application_id())
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

    /// The channel the asker's thread or forum post was opened in, `None` elsewhere. An
    /// interaction describes its channel; a message does not, so its channel is looked up.
    async fn parent(&self, ctx: &Context, at: &Asker<'_>) -> Option<ChannelId> {
        match at.described {
            Some(channel) => channel.parent_id.filter(|_| is_thread(channel.kind)),
            None => self.thread_parent(ctx, at.guild?, at.channel).await,
        }
    }

    /// Whether a guild channel is a thread, and its parent: looked up once (serenity's
    /// cache, else `GET /channels/{id}`) and remembered.
    async fn thread_parent(&self, ctx: &Context, guild: GuildId, channel: ChannelId) -> Option<ChannelId> {
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

    /// A slash command, or "Correct this answer" on a message.
    async fn on_command(&self, ctx: &Context, at: &Asker<'_>, cmd: &CommandInteraction, to: Interacted) {
        let name = &cmd.data.name;
        match cmd.data.kind {
            CommandType::ChatInput => match Command::parse(&format!("/{name}")) {
                Some(command) => self.defer_and_forward(ctx, at, command, format!("/{name}"), to, false).await,
                None => self.tell(ctx, &to, UNKNOWN_INTERACTION).await,
            },
            CommandType::Message if name == CORRECT_THIS_ANSWER => {
                let me = ctx.cache.current_user().id;
                let answer = match cmd.data.target() {
                    Some(ResolvedTarget::Message(msg)) => answer_of(msg, me),
                    _ => None,
                };
                match answer {
                    Some(answer) => drop(self.respond(ctx, &to, correct_form(&answer)).await),
                    None => self.tell(ctx, &to, NOT_AN_ANSWER).await,
                }
            }
            _ => self.tell(ctx, &to, UNKNOWN_INTERACTION).await,
        }
    }

    /// A click on 👍 or 👎.
    async fn on_click(&self, ctx: &Context, at: &Asker<'_>, click: &ComponentInteraction, to: Interacted) {
        match parse_vote_button_data(&click.data.custom_id) {
            Some((Rating::Up, answer)) => {
                let vote = Command::Vote { answer, rating: Rating::Up };
                self.defer_and_forward(ctx, at, vote, String::new(), to, true).await;
            }
            Some((Rating::Down, answer)) => {
                // The 👎 counts now, even if the form is dismissed; a reason sent with the
                // form replaces it.
                self.respond(ctx, &to, why_form(&answer)).await;
                let vote = Command::Vote { answer, rating: Rating::Down };
                let parent = self.parent(ctx, at).await;
                self.forward(self.incoming(at, parent, Some(vote), String::new(), Box::new(AnsweredWithForm))).await;
            }
            None => self.tell(ctx, &to, UNKNOWN_INTERACTION).await,
        }
    }

    /// A form sent back: what was wrong with an answer, or an answer's correction.
    async fn on_form(&self, ctx: &Context, at: &Asker<'_>, form: &ModalInteraction, to: Interacted) {
        let (command, text) = match Form::parse(&form.data.custom_id) {
            Some(Form::Why(answer)) => {
                (Command::Vote { answer, rating: Rating::Down }, field(form, REASON_FIELD).to_string())
            }
            Some(Form::Correct(answer)) => {
                let text = correction_text(field(form, ANSWER_FIELD), field(form, SOURCE_FIELD));
                (Command::Correct { answer: Some(answer) }, text)
            }
            None => return self.tell(ctx, &to, UNKNOWN_INTERACTION).await,
        };
        self.defer_and_forward(ctx, at, command, text, to, true).await;
    }

    /// Responds at once with "thinking…" (Discord wants a response within 3 s; an
    /// ephemeral one only its user sees), then hands the router an [`Incoming`] whose
    /// replies fill that response in.
    async fn defer_and_forward(
        &self,
        ctx: &Context,
        at: &Asker<'_>,
        command: Command,
        text: String,
        to: Interacted,
        ephemeral: bool,
    ) {
        let thinking = CreateInteractionResponseMessage::new().ephemeral(ephemeral);
        if !self.respond(ctx, &to, CreateInteractionResponse::Defer(thinking)).await {
            return;
        }
        let sink = self.sink(ctx, Target::Interaction { token: to.token, ephemeral });
        let parent = self.parent(ctx, at).await;
        self.forward(self.incoming(at, parent, Some(command), text, Box::new(sink))).await;
    }

    /// Responds to an interaction (Discord takes one response); false when that failed.
    async fn respond(&self, ctx: &Context, to: &Interacted, response: CreateInteractionResponse) -> bool {
        let sent = with_retries(classify_serenity, || {
            ctx.http.create_interaction_response(to.id, &to.token, &response, vec![])
        })
        .await;
        if let Err(error) = &sent {
            warn!(bot = %self.bot, %error, "responding to an interaction failed");
        }
        sent.is_ok()
    }

    /// Responds to an interaction with a note only its user sees.
    async fn tell(&self, ctx: &Context, to: &Interacted, note: &str) {
        let note = CreateInteractionResponseMessage::new()
            .content(escape_discord(&isolate_ltr_runs(note)))
            .ephemeral(true)
            .allowed_mentions(no_mentions());
        self.respond(ctx, to, CreateInteractionResponse::Message(note)).await;
    }

    /// The slash commands of [`Command::ALL`], and "Correct this answer" on messages.
    async fn register_commands(&self, ctx: &Context) -> serenity::Result<()> {
        let commands = || {
            Command::ALL
                .iter()
                .filter(|(command, ..)| !matches!(command, Command::Correct { .. }))
                .map(|(_, name, about)| CreateCommand::new(*name).description(*about))
                .chain([CreateCommand::new(CORRECT_THIS_ANSWER).kind(CommandType::Message)])
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
    /// An interaction: the deferred response is edited, further pieces are follow-ups,
    /// seen only by the interaction's user when `ephemeral` (as the deferral was).
    Interaction { token: String, ephemeral: bool },
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
            Target::Interaction { token, .. } => token.clone(),
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
    async fn post(&self, content: &str, first: bool, key: PostKey, votes: Option<&str>) -> Result<Sent, RestError> {
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
                let message = with_votes(message, votes, CreateMessage::components);
                let created = self.create(Route::ChannelMessages { channel_id: *id }, &message).await?;
                Ok(Sent::Message(created))
            }
            Target::Interaction { token, .. } if first => {
                let edit = EditInteractionResponse::new().content(content).allowed_mentions(no_mentions());
                let edit = with_votes(edit, votes, EditInteractionResponse::components);
                let route = self.interaction_route(token, Some(Sent::Original))?;
                self.update(route, &edit).await?;
                Ok(Sent::Original)
            }
            Target::Interaction { token, ephemeral } => {
                let follow_up = CreateInteractionResponseFollowup::new()
                    .content(content)
                    .allowed_mentions(no_mentions())
                    .ephemeral(*ephemeral);
                let follow_up = with_votes(follow_up, votes, CreateInteractionResponseFollowup::components);
                let created = self.create(self.interaction_route(token, None)?, &follow_up).await?;
                Ok(Sent::Message(created))
            }
        }
    }

    async fn edit(&self, sent: Sent, content: &str, votes: Option<&str>) -> Result<(), RestError> {
        match &self.target {
            Target::Channel { id, .. } => {
                let Sent::Message(message_id) = sent else { unreachable!("channels have no original") };
                let edit = EditMessage::new().content(content).allowed_mentions(no_mentions());
                let edit = with_votes(edit, votes, EditMessage::components);
                self.update(Route::ChannelMessage { channel_id: *id, message_id }, &edit).await?;
            }
            Target::Interaction { token, .. } => {
                let edit = EditInteractionResponse::new().content(content).allowed_mentions(no_mentions());
                let edit = with_votes(edit, votes, EditInteractionResponse::components);
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
            (Target::Interaction { token, .. }, sent) => self.interaction_route(token, Some(sent))?,
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
    fn the_vote_buttons_carry_their_answer_and_are_read_back_from_the_bots_own_message_only() {
        let row = serde_json::to_value(vote_buttons("a1b2")).unwrap();
        let ids: Vec<_> = row[0]["components"].as_array().unwrap().iter().map(|b| b["custom_id"].clone()).collect();
        assert_eq!(ids, ["vote:up:a1b2", "vote:down:a1b2"]);
        let message = |author: u64, components: serde_json::Value| -> Message {
            serde_json::from_value(serde_json::json!({
                "id": "5", "channel_id": "3", "content": "Bees dance.", "timestamp": "2026-01-01T00:00:00Z",
                "edited_timestamp": null, "tts": false, "mention_everyone": false, "mentions": [],
                "mention_roles": [], "attachments": [], "embeds": [], "pinned": false, "type": 0,
                "author": {"id": author.to_string(), "username": "lore", "discriminator": "0", "avatar": null},
                "components": components,
            }))
            .unwrap()
        };
        let me = UserId::new(9);
        assert_eq!(answer_of(&message(9, row.clone()), me), Some("a1b2".into()));
        assert_eq!(answer_of(&message(8, row), me), None, "someone else's buttons");
        assert_eq!(answer_of(&message(9, serde_json::json!([])), me), None, "a message with no buttons");
    }

    #[test]
    fn forms_name_an_answer_as_its_buttons_would() {
        assert_eq!(Form::parse("why:a1b2"), Some(Form::Why("a1b2".into())));
        assert_eq!(Form::parse("correct:a1b2"), Some(Form::Correct("a1b2".into())));
        for other in ["why:", "why:a:b", "correct:a b", "vote:up:a1b2", "poll:1"] {
            assert_eq!(Form::parse(other), None, "{other}");
        }
    }

    #[test]
    fn a_correction_form_reads_as_the_correct_command() {
        assert_eq!(correction_text("Bees dance.", ""), "/correct Bees dance.");
        assert_eq!(correction_text("/etc/lore.yaml", "setup.md"), "/correct /etc/lore.yaml\nsource: setup.md");
        assert_eq!(lore_core::command_argument(&correction_text("/etc/lore.yaml", "")), "/etc/lore.yaml");
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

    #[test]
    fn a_hebrew_heading_in_a_source_is_isolated_then_escaped() {
        let s = sources_block::<DiscordReply>(&[SourceRef {
            number: 1,
            source: "my_notes.md".into(),
            location: "§ מבוא, lines 207-208".into(),
            id: String::new(),
        }]);
        assert_eq!(s, "\n\n**Sources**\n\\[1\\] my\\_notes.md (§ \u{2068}מבוא\u{2069}, lines 207-208)");
    }
}
