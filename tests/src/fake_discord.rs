//! A fake Discord for the real serenity client: REST under `/api/v10` and the gateway
//! websocket at `/gw`, both on one 127.0.0.1 port. It records every REST request and every
//! gateway frame the client sends, lets a test inject dispatches, answer requests with 429,
//! and drop the websocket. `GET /channels/{id}` answers a public thread for the ids a test
//! registers and a text channel (in a category) otherwise; a reply to a deleted message is
//! refused unless it says `fail_if_not_exists: false`.
//!
//! Interactions: a test clicks a button of one of the bot's messages (type 3), uses a
//! message command the bot registered on one of its messages (type 2, `data.type` 3, with
//! `target_id` and `resolved.messages`), or sends back a form the bot showed (type 5,
//! only the fields that form has); each comes as INTERACTION_CREATE, from the channel of
//! the message, with its guild's `member` or a DM's `user`, and a partial `channel`. The
//! bot's one response (`POST /interactions/{id}/{token}/callback`: 4 message, 5 deferred,
//! 9 form; a second one is refused as Discord refuses it) makes the original response,
//! ephemeral with flag 64, which `PATCH /webhooks/{app}/{token}/messages/@original` edits
//! and follow-ups join. Message components (action rows of buttons) are kept from create
//! and edit bodies and returned in message objects, in interactions and in a reply's
//! `referenced_message`; components, forms and commands that break Discord's rules (sizes,
//! lengths, unique ids, a description on a message command) are refused with 400.
//!
//! Not modelled: permissions, guild objects (READY has no guilds), zlib transport
//! compression, sharding, real rate-limit buckets and headers beyond a scripted 429,
//! attachments and embeds, the gateway's own rate limits, invalid-session timing, select
//! menus, the 15-minute life of an interaction token, the 3-second limit on a response.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::fake_telegram::DROPPED;
use crate::{wait_until, Recorded, Server};

/// The bot's own user id in the fake.
pub const BOT_ID: u64 = 900_000_000_000_000_001;
/// The application id the fake reports in READY.
pub const APP_ID: u64 = 900_000_000_000_000_002;
const HEARTBEAT_MS: u64 = 41_250;
/// Flag of a message only an interaction's user sees.
pub const EPHEMERAL: u64 = 64;
/// The category every text channel of the fake sits in: its `parent_id`.
pub const CATEGORY: u64 = 2;

pub struct FakeDiscord {
    state: Arc<Shared>,
    server: Server,
}

#[derive(Default)]
struct Shared {
    addr: Mutex<Option<SocketAddr>>,
    rest: Mutex<Vec<Recorded>>,
    /// Frames the client sent on the gateway, parsed.
    gateway_in: Mutex<Vec<Value>>,
    gateway: Mutex<Gateway>,
    /// Scripted faults: (method, path substring, how many left, what goes wrong).
    faults: Mutex<Vec<(Method, String, u32, Fault)>>,
    /// Messages created with an enforced nonce: (channel, nonce) -> message id.
    nonces: Mutex<HashMap<(String, String), u64>>,
    /// Messages the bot sent, by id, so edits can return the whole object.
    messages: Mutex<HashMap<u64, Value>>,
    /// Threads (and forum posts) a test opened: thread id -> (parent channel, guild).
    threads: Mutex<HashMap<u64, (u64, u64)>>,
    /// The guild of each channel a guild message was injected in.
    channel_guilds: Mutex<HashMap<u64, u64>>,
    /// Messages deleted since they were sent.
    deleted: Mutex<HashSet<u64>>,
    /// Interactions dispatched, by token.
    interactions: Mutex<HashMap<String, Interacted>>,
    /// The application commands the bot registered last, as Discord returned them.
    commands: Mutex<Vec<Value>>,
    next_id: AtomicU64,
}

/// An interaction dispatched, and the bot's response to it.
struct Interacted {
    /// The INTERACTION_CREATE payload.
    payload: Value,
    /// The callback's body, once the bot responded (Discord takes one response).
    callback: Option<Value>,
}

#[derive(Default)]
struct Gateway {
    session: Option<Session>,
    /// The live connection, once it is identified or resumed.
    live: Option<mpsc::UnboundedSender<Out>>,
    /// Events injected before the first session, delivered after READY.
    early: VecDeque<(String, Value)>,
    sessions_started: u32,
    /// READY is held back from the next Identify until [`FakeDiscord::release_ready`].
    hold_ready: bool,
    /// The held frames (READY and what follows it) and the connection they are for.
    held: Option<(Vec<String>, mpsc::UnboundedSender<Out>)>,
}

struct Session {
    id: String,
    seq: u64,
    /// Every dispatch of the session, for replay on resume.
    log: Vec<(u64, String)>,
}

/// What goes wrong with a REST request, as Discord or the network between can make it.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// 429 with `retry_after` (seconds) in the body and `Retry-After` rounded up.
    RateLimited(f64),
    /// A 5xx.
    ServerError(u16),
    /// No answer at all, and the request is not carried out: the client's timeout fires.
    Hang,
    /// The request is carried out, but its response never comes.
    LostResponse,
}

enum Out {
    Frame(String),
    /// Drop the TCP connection without a close frame.
    Drop,
}

impl FakeDiscord {
    pub async fn start() -> Self {
        let state = Arc::new(Shared { next_id: AtomicU64::new(1_000_000), ..Shared::default() });
        let app = Router::new().route("/gw", get(gateway)).fallback(rest).with_state(state.clone());
        let server = Server::start(app).await;
        *state.addr.lock().unwrap() = Some(server.addr);
        Self { state, server }
    }

    /// REST base to give serenity as its proxy.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// Every REST request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.rest.lock().unwrap().clone()
    }

    /// Every gateway frame the client sent so far.
    pub fn gateway_frames(&self) -> Vec<Value> {
        self.state.gateway_in.lock().unwrap().clone()
    }

    /// Frames with this opcode the client sent (2 Identify, 6 Resume, 1 Heartbeat).
    pub fn ops(&self, op: u64) -> Vec<Value> {
        self.gateway_frames().into_iter().filter(|f| f["op"] == op).collect()
    }

    /// Waits until the client identified and got READY (fails if serenity went elsewhere).
    pub async fn wait_ready(&self, timeout: Duration) {
        wait_until(timeout, "the client identifies on the fake gateway", || {
            self.state.gateway.lock().unwrap().live.is_some() && !self.ops(2).is_empty()
        })
        .await;
    }

    /// The next `count` requests with this method whose path contains `path_part` get a 429.
    pub fn rate_limit(&self, method: Method, path_part: &str, count: u32, retry_after_secs: f64) {
        self.inject(method, path_part, count, Fault::RateLimited(retry_after_secs));
    }

    /// The next `count` requests with this method whose path contains `path_part` meet `fault`.
    pub fn inject(&self, method: Method, path_part: &str, count: u32, fault: Fault) {
        self.state.faults.lock().unwrap().push((method, path_part.to_string(), count, fault));
    }

    /// Sends a dispatch (op 0) with the next sequence number; before the first session it
    /// waits for READY, while the socket is down it waits for a resume.
    pub fn dispatch(&self, event: &str, data: Value) {
        if let ("INTERACTION_CREATE", Some(token)) = (event, data["token"].as_str()) {
            let interacted = Interacted { payload: data.clone(), callback: None };
            self.state.interactions.lock().unwrap().insert(token.to_string(), interacted);
        }
        let mut gw = self.state.gateway.lock().unwrap();
        let Some(session) = gw.session.as_mut() else {
            gw.early.push_back((event.to_string(), data));
            return;
        };
        let frame = push_event(session, event, data);
        if let Some(live) = &gw.live {
            let _ = live.send(Out::Frame(frame));
        }
    }

    /// Holds READY back from the next Identify, as a slow gateway would.
    pub fn hold_ready(&self) {
        self.state.gateway.lock().unwrap().hold_ready = true;
    }

    /// Sends the READY held back since Identify.
    pub fn release_ready(&self) {
        let mut gw = self.state.gateway.lock().unwrap();
        gw.hold_ready = false;
        if let Some((frames, tx)) = gw.held.take() {
            for frame in frames {
                let _ = tx.send(Out::Frame(frame));
            }
        }
    }

    /// Drops the gateway connection abruptly (no close frame), as a network failure would.
    pub fn drop_gateway(&self) {
        let mut gw = self.state.gateway.lock().unwrap();
        if let Some(live) = gw.live.take() {
            let _ = live.send(Out::Drop);
        }
    }

    /// Whether a gateway connection is identified or resumed right now.
    pub fn gateway_live(&self) -> bool {
        self.state.gateway.lock().unwrap().live.is_some()
    }

    /// A MESSAGE_CREATE payload from a human; adjust it with [`MessageSpec`] setters.
    pub fn message(&self, channel: u64, author: u64, content: &str) -> MessageSpec {
        let id = self.state.next_id.fetch_add(1, Ordering::SeqCst);
        let author = user(author, &format!("user{author}"), false);
        MessageSpec(message_object(id, &channel.to_string(), author, content))
    }

    /// Injects a message (MESSAGE_CREATE); returns its id. A reply to one of the bot's
    /// messages carries that message as it is now, as Discord sends it.
    pub fn send(&self, mut spec: MessageSpec) -> u64 {
        let id = spec.0["id"].as_str().unwrap().parse().unwrap();
        if let (Some(channel), Some(guild)) = (snowflake(&spec.0["channel_id"]), snowflake(&spec.0["guild_id"])) {
            self.state.channel_guilds.lock().unwrap().insert(channel, guild);
        }
        let replied_to = snowflake(&spec.0["message_reference"]["message_id"]);
        if let Some(earlier) = replied_to.and_then(|id| self.state.messages.lock().unwrap().get(&id).cloned()) {
            spec.0["referenced_message"] = earlier;
        }
        self.dispatch("MESSAGE_CREATE", spec.0);
        id
    }

    /// The bot's message `id` as Discord returns it now.
    pub fn bot_message(&self, id: u64) -> Value {
        self.state.messages.lock().unwrap().get(&id).cloned().unwrap_or_else(|| panic!("no message {id} of the bot"))
    }

    /// A click by `user` on the button `custom_id` under the bot's message `message`.
    pub fn click(&self, message: u64, custom_id: &str, user: u64) -> InteractionSpec {
        let message = self.bot_message(message);
        let data = json!({"custom_id": custom_id, "component_type": 2});
        let mut spec = self.interaction(3, message["channel_id"].as_str().unwrap(), user, data);
        spec.0["message"] = message;
        spec
    }

    /// `user` runs the message command `name`, which the bot registered, on the bot's
    /// message `target`.
    pub fn message_command(&self, name: &str, target: u64, user: u64) -> InteractionSpec {
        let command = self.state.commands.lock().unwrap().iter().find(|c| c["name"] == name && c["type"] == 3).cloned();
        let command = command.unwrap_or_else(|| panic!("the bot registered no message command {name:?}"));
        let message = self.bot_message(target);
        let channel = message["channel_id"].as_str().unwrap().to_string();
        let data = json!({
            "id": command["id"], "name": name, "type": 3, "target_id": target.to_string(),
            "resolved": {"messages": {target.to_string(): message}},
        });
        self.interaction(2, &channel, user, data)
    }

    /// The form the bot showed in response to interaction `shown`, sent back by the same
    /// person with `fields` (custom id, text) filled in and the rest left empty; returns
    /// the new interaction's token.
    pub fn submit_form(&self, shown: &str, fields: &[(&str, &str)]) -> String {
        let (first, form) = {
            let interactions = self.state.interactions.lock().unwrap();
            let interacted = interactions.get(shown).unwrap_or_else(|| panic!("no interaction {shown}"));
            let form = interacted.callback.clone().filter(|c| c["type"] == 9);
            (
                interacted.payload.clone(),
                form.unwrap_or_else(|| panic!("no form was shown for {shown}"))["data"].clone(),
            )
        };
        let inputs: Vec<&Value> =
            form["components"].as_array().unwrap().iter().map(|row| &row["components"][0]).collect();
        for (id, _) in fields {
            assert!(inputs.iter().any(|input| input["custom_id"] == *id), "the form has no field {id:?}: {form}");
        }
        let rows: Vec<Value> = inputs
            .iter()
            .map(|input| {
                let typed = fields.iter().find(|(id, _)| input["custom_id"] == *id).map_or("", |(_, text)| text);
                let required = input["required"].as_bool().unwrap_or(true);
                assert!(
                    !required || !typed.is_empty(),
                    "Discord does not send a form with {} empty",
                    input["custom_id"]
                );
                json!({"type": 1, "components": [{"type": 4, "custom_id": input["custom_id"], "value": typed}]})
            })
            .collect();
        let id = self.state.next_id.fetch_add(1, Ordering::SeqCst);
        let mut submitted = first;
        submitted["id"] = id.to_string().into();
        submitted["token"] = format!("token-{id}").into();
        submitted["type"] = 5.into();
        submitted["data"] = json!({"custom_id": form["custom_id"], "components": rows});
        self.interact(InteractionSpec(submitted))
    }

    /// Injects an interaction (INTERACTION_CREATE); returns its token.
    pub fn interact(&self, spec: InteractionSpec) -> String {
        let token = spec.0["token"].as_str().unwrap().to_string();
        self.dispatch("INTERACTION_CREATE", spec.0);
        token
    }

    /// The bot's response to an interaction (the callback's body), once it responded.
    pub fn response(&self, token: &str) -> Option<Value> {
        self.state.interactions.lock().unwrap().get(token).and_then(|i| i.callback.clone())
    }

    /// An interaction's original response as its user sees it now, once there is one.
    pub fn original(&self, token: &str) -> Option<Value> {
        self.state.messages.lock().unwrap().get(&original_id(token)).cloned()
    }

    /// An interaction of type `kind` by `user` in `channel`, as Discord sends it: in a
    /// guild's channel with the user's `member`, in a DM with the `user`.
    fn interaction(&self, kind: u8, channel: &str, user_id: u64, data: Value) -> InteractionSpec {
        let id = self.state.next_id.fetch_add(1, Ordering::SeqCst);
        let person = user(user_id, &format!("user{user_id}"), false);
        let guild = channel.parse().ok().and_then(|c| guild_of(&self.state, c));
        let mut interaction = json!({
            "id": id.to_string(),
            "application_id": APP_ID.to_string(),
            "type": kind,
            "data": data,
            "channel_id": channel,
            "token": format!("token-{id}"),
            "version": 1,
            "app_permissions": "0",
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": 8_388_608,
        });
        match guild {
            Some(guild) => {
                interaction["guild_id"] = guild.to_string().into();
                interaction["guild_locale"] = "en-US".into();
                interaction["member"] = member(&[]);
                interaction["member"]["user"] = person;
                interaction["channel"] = channel_value(&self.state, channel);
            }
            None => {
                interaction["user"] = person;
                interaction["channel"] = json!({"id": channel, "type": 1});
            }
        }
        InteractionSpec(interaction)
    }

    /// Opens a public thread (or a forum post, which is one) in `parent`: `GET
    /// /channels/{thread}` describes it from now on.
    pub fn add_thread(&self, thread: u64, parent: u64, guild: u64) {
        self.state.threads.lock().unwrap().insert(thread, (parent, guild));
    }

    /// Deletes a message, as its author or a moderator would.
    pub fn delete_message(&self, id: u64) {
        self.state.deleted.lock().unwrap().insert(id);
        self.state.messages.lock().unwrap().remove(&id);
    }

    /// Ids of the bot's messages in a channel still there that everyone sees, in order.
    pub fn message_ids(&self, channel: u64) -> Vec<u64> {
        let channel = channel.to_string();
        let messages = self.state.messages.lock().unwrap();
        let mut ids: Vec<u64> = messages
            .iter()
            .filter(|(_, m)| m["channel_id"] == channel.as_str() && !is_ephemeral(m))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// How many times the client fetched a channel.
    pub fn channel_lookups(&self, channel: u64) -> usize {
        let path = format!("/api/v10/channels/{channel}");
        self.requests().iter().filter(|r| r.method == "GET" && r.path == path).count()
    }

    /// Bodies of the messages the bot posted or edited in a channel, in order, with the
    /// request method ("POST" or "PATCH"); only successful requests.
    pub fn sent_in(&self, channel: u64) -> Vec<(String, Value)> {
        let prefix = format!("/api/v10/channels/{channel}/messages");
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(&prefix) && r.status < 300)
            .map(|r| (r.method, r.body))
            .collect()
    }

    /// The text each message of the bot in a channel shows now to everyone (not the
    /// ephemeral ones), in the order they were posted.
    pub fn shown_in(&self, channel: u64) -> Vec<String> {
        let channel = channel.to_string();
        let messages = self.state.messages.lock().unwrap();
        let mut mine: Vec<_> =
            messages.values().filter(|m| m["channel_id"] == channel.as_str() && !is_ephemeral(m)).collect();
        mine.sort_by_key(|m| m["id"].as_str().unwrap().parse::<u64>().unwrap());
        mine.iter().map(|m| m["content"].as_str().unwrap_or("").to_string()).collect()
    }
}

/// A message being built for injection.
pub struct MessageSpec(pub Value);

impl MessageSpec {
    /// In a guild, with the author's member roles.
    pub fn guild(mut self, guild: u64, roles: &[u64]) -> Self {
        self.0["guild_id"] = guild.to_string().into();
        self.0["member"] = member(roles);
        self
    }

    /// Mentions the bot (the `<@id>` must be in the content too).
    pub fn mentioning_bot(mut self) -> Self {
        self.0["mentions"] = json!([user(BOT_ID, "lore", true)]);
        self
    }

    /// A message of another type: 6 pin, 7 member join, 18 thread created, ...
    pub fn kind(mut self, kind: u8) -> Self {
        self.0["type"] = kind.into();
        self
    }

    /// Written by a bot.
    pub fn from_bot(mut self, id: u64) -> Self {
        self.0["author"] = user(id, &format!("bot{id}"), true);
        self
    }

    /// A reply to an earlier message by `author`.
    pub fn replying_to(mut self, message: u64, author: u64, author_is_bot: bool) -> Self {
        let channel = self.0["channel_id"].clone();
        self.0["message_reference"] = json!({"message_id": message.to_string(), "channel_id": channel});
        let channel = channel.as_str().unwrap_or_default();
        let earlier = message_object(message, channel, user(author, "someone", author_is_bot), "earlier");
        self.0["referenced_message"] = earlier;
        self.0["type"] = 19.into();
        self
    }
}

/// An interaction being built for injection.
pub struct InteractionSpec(pub Value);

impl InteractionSpec {
    /// By a guild member with these roles.
    pub fn roles(mut self, roles: &[u64]) -> Self {
        assert!(self.0["member"].is_object(), "roles are a guild member's");
        self.0["member"]["roles"] = json!(roles.iter().map(u64::to_string).collect::<Vec<_>>());
        self
    }
}

/// A guild member object (without its user, which messages carry beside it).
fn member(roles: &[u64]) -> Value {
    json!({
        "roles": roles.iter().map(u64::to_string).collect::<Vec<_>>(),
        "joined_at": "2025-01-01T00:00:00.000000+00:00",
        "deaf": false,
        "mute": false,
        "flags": 0,
    })
}

/// The guild a channel or thread is in, as far as the fake knows.
fn guild_of(state: &Shared, channel: u64) -> Option<u64> {
    let thread = state.threads.lock().unwrap().get(&channel).map(|(_, guild)| *guild);
    thread.or_else(|| state.channel_guilds.lock().unwrap().get(&channel).copied())
}

fn is_ephemeral(message: &Value) -> bool {
    message["flags"].as_u64().is_some_and(|flags| flags & EPHEMERAL != 0)
}

/// A user object as Discord sends it.
pub fn user(id: u64, name: &str, bot: bool) -> Value {
    json!({
        "id": id.to_string(),
        "username": name,
        "discriminator": "0",
        "global_name": null,
        "avatar": null,
        "bot": bot,
        "public_flags": 0,
    })
}

fn push_event(session: &mut Session, event: &str, data: Value) -> String {
    session.seq += 1;
    let frame = json!({"op": 0, "t": event, "s": session.seq, "d": data}).to_string();
    session.log.push((session.seq, frame.clone()));
    frame
}

async fn gateway(ws: WebSocketUpgrade, State(state): State<Arc<Shared>>) -> Response {
    ws.on_upgrade(move |socket| serve_gateway(socket, state))
}

async fn serve_gateway(mut socket: WebSocket, state: Arc<Shared>) {
    let hello = json!({"op": 10, "d": {"heartbeat_interval": HEARTBEAT_MS}, "s": null, "t": null});
    if socket.send(WsMessage::Text(hello.to_string().into())).await.is_err() {
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Out::Frame(frame)) => {
                    if socket.send(WsMessage::Text(frame.into())).await.is_err() {
                        return;
                    }
                }
                // Returning drops the socket: the TCP connection closes without a close frame.
                Some(Out::Drop) | None => return,
            },
            frame = socket.recv() => {
                let Some(Ok(frame)) = frame else { return };
                let text = match frame {
                    WsMessage::Text(t) => t.to_string(),
                    WsMessage::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                    WsMessage::Close(_) => return,
                    _ => continue,
                };
                let Ok(value) = serde_json::from_str::<Value>(&text) else { continue };
                state.gateway_in.lock().unwrap().push(value.clone());
                for reply in on_client_frame(&state, &value, &tx) {
                    if socket.send(WsMessage::Text(reply.into())).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// What the server answers to one client frame; may make this connection the live one.
fn on_client_frame(state: &Shared, frame: &Value, tx: &mpsc::UnboundedSender<Out>) -> Vec<String> {
    let addr = state.addr.lock().unwrap().expect("addr");
    match frame["op"].as_u64() {
        Some(1) => vec![json!({"op": 11, "d": null, "s": null, "t": null}).to_string()],
        Some(2) => {
            let mut gw = state.gateway.lock().unwrap();
            gw.sessions_started += 1;
            let mut session = Session { id: format!("session-{}", gw.sessions_started), seq: 0, log: Vec::new() };
            let ready = json!({
                "v": 10,
                "user": {
                    "id": BOT_ID.to_string(), "username": "lore", "discriminator": "0",
                    "global_name": null, "avatar": null, "bot": true, "verified": true,
                    "mfa_enabled": false, "flags": 0, "public_flags": 0,
                },
                "guilds": [],
                "session_id": session.id,
                "resume_gateway_url": format!("ws://{addr}/gw"),
                "shard": [0, 1],
                "application": {"id": APP_ID.to_string(), "flags": 0},
                "private_channels": [],
                "relationships": [],
            });
            let mut out = vec![push_event(&mut session, "READY", ready)];
            while let Some((event, data)) = gw.early.pop_front() {
                out.push(push_event(&mut session, &event, data));
            }
            gw.session = Some(session);
            gw.live = Some(tx.clone());
            if gw.hold_ready {
                gw.held = Some((out, tx.clone()));
                return Vec::new();
            }
            out
        }
        Some(6) => {
            let mut gw = state.gateway.lock().unwrap();
            let d = &frame["d"];
            let seq = d["seq"].as_u64().unwrap_or(0);
            match gw.session.as_mut() {
                Some(session) if d["session_id"] == session.id.as_str() => {
                    let mut out: Vec<String> =
                        session.log.iter().filter(|(s, _)| *s > seq).map(|(_, f)| f.clone()).collect();
                    out.push(push_event(session, "RESUMED", json!({})));
                    gw.live = Some(tx.clone());
                    out
                }
                _ => vec![json!({"op": 9, "d": false, "s": null, "t": null}).to_string()],
            }
        }
        _ => vec![],
    }
}

async fn rest(State(state): State<Arc<Shared>>, method: Method, uri: Uri, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let fault = {
        let mut faults = state.faults.lock().unwrap();
        faults.iter_mut().find(|(m, part, left, _)| *m == method && path.contains(part.as_str()) && *left > 0).map(
            |(_, _, left, fault)| {
                *left -= 1;
                *fault
            },
        )
    };
    let response = match fault {
        Some(Fault::RateLimited(after)) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", format!("{}", after.ceil())), ("x-ratelimit-scope", "user".to_string())],
            Json(json!({
                "message": "You are being rate limited.",
                "retry_after": after,
                "global": false,
                "code": 0,
            })),
        )
            .into_response(),
        Some(Fault::ServerError(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, Json(json!({"message": status.canonical_reason(), "code": 0}))).into_response()
        }
        Some(fault @ (Fault::Hang | Fault::LostResponse)) => {
            if let Fault::LostResponse = fault {
                route(&state, &method, &path, &body);
            }
            record(&state, method, path, body, DROPPED);
            return std::future::pending().await;
        }
        None => route(&state, &method, &path, &body),
    };
    let status = response.status().as_u16();
    record(&state, method, path, body, status);
    response
}

fn record(state: &Shared, method: Method, path: String, body: Value, status: u16) {
    state.rest.lock().unwrap().push(Recorded {
        method: method.to_string(),
        path,
        body,
        status,
        at: tokio::time::Instant::now(),
    });
}

fn route(state: &Shared, method: &Method, path: &str, body: &Value) -> Response {
    let addr = state.addr.lock().unwrap().expect("addr");
    let Some(rest) = path.strip_prefix("/api/v10/") else {
        return not_found();
    };
    if let Some(problem) = components_problem(&body["components"]) {
        return invalid_form_body(&problem);
    }
    let parts: Vec<&str> = rest.split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["gateway"]) => Json(json!({"url": format!("ws://{addr}/gw")})).into_response(),
        ("GET", ["gateway", "bot"]) => Json(json!({
            "url": format!("ws://{addr}/gw"),
            "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1},
        }))
        .into_response(),
        ("GET", ["users", "@me"]) => Json(user(BOT_ID, "lore", true)).into_response(),
        ("POST", ["channels", _, "typing"]) => StatusCode::NO_CONTENT.into_response(),
        ("GET", ["channels", channel]) => channel_json(state, channel),
        ("POST", ["channels", channel, "messages"]) => post_message(state, channel, body),
        ("PATCH", ["channels", _, "messages", id]) => edit_message(state, id, body),
        ("DELETE", ["channels", _, "messages", id]) => delete_own_message(state, id),
        ("DELETE", ["webhooks", _, token, "messages", id]) => match *id {
            "@original" => delete_own_message(state, &original_id(token).to_string()),
            id => delete_own_message(state, id),
        },
        ("PUT", ["applications", _, "commands"]) => set_commands(state, None, body),
        ("PUT", ["applications", _, "guilds", guild, "commands"]) => set_commands(state, Some(guild), body),
        ("POST", ["interactions", _, token, "callback"]) => interaction_callback(state, token, body),
        ("PATCH", ["webhooks", _, token, "messages", "@original"]) => match responded_with(state, token) {
            Some(4 | 5) => edit_message(state, &original_id(token).to_string(), body),
            _ => unknown_message(),
        },
        ("POST", ["webhooks", _, token]) => match (responded_with(state, token), interaction_channel(state, token)) {
            (Some(4..=7), Some(channel)) => Json(new_message(state, &channel, body)).into_response(),
            _ => unknown_webhook(),
        },
        ("PATCH", ["webhooks", _, _, "messages", id]) => edit_message(state, id, body),
        _ => not_found(),
    }
}

/// The type of the bot's response to interaction `token`, once it responded.
fn responded_with(state: &Shared, token: &str) -> Option<u64> {
    state.interactions.lock().unwrap().get(token)?.callback.as_ref()?["type"].as_u64()
}

fn interaction_channel(state: &Shared, token: &str) -> Option<String> {
    Some(state.interactions.lock().unwrap().get(token)?.payload["channel_id"].as_str()?.to_string())
}

/// Takes the bot's one response to an interaction, if Discord would: a message (4) or
/// "thinking" (5) becomes the original response, a form (9) is kept for
/// [`FakeDiscord::submit_form`].
fn interaction_callback(state: &Shared, token: &str, body: &Value) -> Response {
    let mut interactions = state.interactions.lock().unwrap();
    let Some(interacted) = interactions.get_mut(token) else {
        return (StatusCode::NOT_FOUND, Json(json!({"message": "Unknown interaction", "code": 10062}))).into_response();
    };
    if interacted.callback.is_some() {
        let already = json!({"message": "Interaction has already been acknowledged.", "code": 40060});
        return (StatusCode::BAD_REQUEST, Json(already)).into_response();
    }
    let kind = body["type"].as_u64().unwrap_or(0);
    let from_component = interacted.payload["message"].is_object();
    // Which responses each interaction type takes (a form cannot answer a form).
    let allowed = match interacted.payload["type"].as_u64() {
        Some(2) => matches!(kind, 4 | 5 | 9),
        Some(3) => matches!(kind, 4..=7 | 9),
        Some(5) => matches!(kind, 4 | 5) || (from_component && matches!(kind, 6 | 7)),
        _ => false,
    };
    let problem = match kind {
        _ if !allowed => Some(format!("response type {kind} is not valid for this interaction")),
        9 => form_problem(&body["data"]),
        _ => components_problem(&body["data"]["components"]),
    };
    if let Some(problem) = problem {
        return invalid_form_body(&problem);
    }
    interacted.callback = Some(body.clone());
    let channel = interacted.payload["channel_id"].as_str().unwrap_or_default().to_string();
    drop(interactions);
    if matches!(kind, 4 | 5) {
        let id = original_id(token);
        let mut data = body["data"].clone();
        if kind == 5 {
            // "Thinking…" until the bot edits it.
            data["content"] = "".into();
        }
        state.messages.lock().unwrap().insert(id, message_json(id, &channel, &data));
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Registers the bot's application commands (all of them, replacing earlier ones), as
/// Discord returns them; a command that breaks Discord's rules refuses the lot.
fn set_commands(state: &Shared, guild: Option<&str>, body: &Value) -> Response {
    let Some(commands) = body.as_array() else { return invalid_form_body("a list of commands") };
    if let Some(problem) = commands.iter().find_map(command_problem) {
        return invalid_form_body(&problem);
    }
    let mut names = HashSet::new();
    if let Some(twice) = commands.iter().find(|c| !names.insert((c["type"].as_u64().unwrap_or(1), &c["name"]))) {
        return invalid_form_body(&format!("command {} is there twice", twice["name"]));
    }
    let made: Vec<Value> = commands
        .iter()
        .map(|c| {
            json!({
                "id": state.next_id.fetch_add(1, Ordering::SeqCst).to_string(),
                "type": c["type"].as_u64().unwrap_or(1),
                "application_id": APP_ID.to_string(),
                "guild_id": guild,
                "name": c["name"],
                "description": c["description"].as_str().unwrap_or(""),
                "options": c["options"].as_array().cloned().unwrap_or_default(),
                "default_member_permissions": null,
                "version": "1",
            })
        })
        .collect();
    *state.commands.lock().unwrap() = made.clone();
    Json(made).into_response()
}

/// What is wrong with one command by Discord's rules: a slash command (type 1) has a
/// lowercase name without spaces and a description; a message or user command (3, 2)
/// has a name of up to 32 characters and no description.
fn command_problem(command: &Value) -> Option<String> {
    let name = command["name"].as_str().unwrap_or("");
    let description = command["description"].as_str().unwrap_or("");
    let length = name.chars().count();
    match command["type"].as_u64().unwrap_or(1) {
        1 if !(1..=32).contains(&length) || name.chars().any(|c| c.is_uppercase() || c.is_whitespace()) => {
            Some(format!("slash command name {name:?}"))
        }
        1 if !(1..=100).contains(&description.chars().count()) => Some(format!("description of /{name}")),
        2 | 3 if !(1..=32).contains(&length) => Some(format!("command name {name:?}")),
        2 | 3 if !description.is_empty() => Some(format!("{name:?}: a message or user command has no description")),
        1..=3 => None,
        kind => Some(format!("command type {kind}")),
    }
}

/// What is wrong with a message's components by Discord's rules, as far as buttons go:
/// at most 5 action rows of at most 5 buttons, each with a label or an emoji, a style,
/// and (unless it is a link) a custom id of at most 100 characters, unique in the message.
fn components_problem(components: &Value) -> Option<String> {
    let rows = match components {
        Value::Null => return None,
        Value::Array(rows) if rows.len() <= 5 => rows,
        _ => return Some("at most 5 action rows".into()),
    };
    let mut ids = HashSet::new();
    for row in rows {
        let buttons = row["components"].as_array().filter(|b| row["type"] == 1 && (1..=5).contains(&b.len()));
        let Some(buttons) = buttons else { return Some(format!("an action row holds 1 to 5 components: {row}")) };
        for button in buttons {
            let id = button["custom_id"].as_str();
            let shows_something = button["label"].is_string() || button["emoji"].is_object();
            let valid = button["type"] == 2
                && shows_something
                && matches!(button["style"].as_u64(), Some(1..=5))
                && (button["style"] == 5 || id.is_some_and(|id| (1..=100).contains(&id.chars().count())))
                && id.is_none_or(|id| ids.insert(id.to_string()));
            if !valid {
                return Some(format!("invalid button {button}"));
            }
        }
    }
    None
}

/// What is wrong with a form (a modal) by Discord's rules: a custom id of at most 100
/// characters, a title of 1 to 45, and 1 to 5 action rows each holding one text input with
/// a custom id, a style (1 short, 2 paragraph), a label of at most 45 characters, a
/// placeholder of at most 100 and a `max_length` of at most 4000.
fn form_problem(form: &Value) -> Option<String> {
    let chars = |v: &Value| v.as_str().map(|s| s.chars().count());
    let rows = form["components"].as_array().filter(|rows| (1..=5).contains(&rows.len()));
    let head_ok = matches!(chars(&form["custom_id"]), Some(1..=100)) && matches!(chars(&form["title"]), Some(1..=45));
    let Some(rows) = rows.filter(|_| head_ok) else { return Some(format!("invalid form {form}")) };
    for row in rows {
        let input = &row["components"][0];
        let valid = row["type"] == 1
            && row["components"].as_array().is_some_and(|c| c.len() == 1)
            && input["type"] == 4
            && matches!(chars(&input["custom_id"]), Some(1..=100))
            && matches!(input["style"].as_u64(), Some(1 | 2))
            && matches!(chars(&input["label"]), Some(1..=45))
            && chars(&input["placeholder"]).is_none_or(|n| n <= 100)
            && input["max_length"].as_u64().is_none_or(|n| (1..=4000).contains(&n));
        if !valid {
            return Some(format!("invalid text input {row}"));
        }
    }
    None
}

/// Discord's 400 for a body it will not take.
fn invalid_form_body(problem: &str) -> Response {
    let errors = json!({"_errors": [{"code": "BASE_TYPE_BAD", "message": problem}]});
    (StatusCode::BAD_REQUEST, Json(json!({"code": 50035, "message": "Invalid Form Body", "errors": errors})))
        .into_response()
}

fn unknown_message() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"message": "Unknown Message", "code": 10008}))).into_response()
}

fn unknown_webhook() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"message": "Unknown Webhook", "code": 10015}))).into_response()
}

/// Snowflakes travel as strings.
fn snowflake(value: &Value) -> Option<u64> {
    value.as_str()?.parse().ok()
}

fn channel_json(state: &Shared, channel: &str) -> Response {
    if channel.parse::<u64>().is_err() {
        return not_found();
    }
    Json(channel_value(state, channel)).into_response()
}

/// A registered thread as a public thread (type 11) under its parent; any other id as a
/// text channel (type 0), whose `parent_id` is its category.
fn channel_value(state: &Shared, channel: &str) -> Value {
    let id = channel.parse::<u64>().unwrap_or_default();
    let thread = state.threads.lock().unwrap().get(&id).copied();
    let known_guild = state.channel_guilds.lock().unwrap().get(&id).copied();
    match thread {
        Some((parent, guild)) => json!({
            "id": channel,
            "type": 11,
            "guild_id": guild.to_string(),
            "parent_id": parent.to_string(),
            "owner_id": "401",
            "name": format!("thread {channel}"),
            "last_message_id": null,
            "rate_limit_per_user": 0,
            "flags": 0,
            "message_count": 1,
            "member_count": 1,
            "total_message_sent": 1,
            "thread_metadata": {
                "archived": false,
                "auto_archive_duration": 1440,
                "archive_timestamp": "2026-01-01T00:00:00.000000+00:00",
                "locked": false,
                "create_timestamp": "2026-01-01T00:00:00.000000+00:00",
            },
        }),
        None => json!({
            "id": channel,
            "type": 0,
            "guild_id": known_guild.map(|g| g.to_string()),
            "parent_id": CATEGORY.to_string(),
            "name": format!("channel-{channel}"),
            "position": 0,
            "permission_overwrites": [],
            "topic": null,
            "nsfw": false,
            "last_message_id": null,
            "rate_limit_per_user": 0,
            "flags": 0,
        }),
    }
}

/// Creates the bot's message. A reply to a deleted message is refused, as Discord does,
/// unless it asks to be sent as a plain message then.
fn post_message(state: &Shared, channel: &str, body: &Value) -> Response {
    let reference = &body["message_reference"];
    let replies_to_deleted =
        snowflake(&reference["message_id"]).is_some_and(|id| state.deleted.lock().unwrap().contains(&id));
    if !replies_to_deleted {
        return Json(new_message(state, channel, body)).into_response();
    }
    if reference["fail_if_not_exists"] == false {
        let mut plain = body.clone();
        plain.as_object_mut().map(|b| b.remove("message_reference"));
        return Json(new_message(state, channel, &plain)).into_response();
    }
    let unknown = json!({"_errors": [{"code": "REPLIES_UNKNOWN_MESSAGE", "message": "Unknown message"}]});
    let refusal = json!({"code": 50035, "message": "Invalid Form Body", "errors": {"message_reference": unknown}});
    (StatusCode::BAD_REQUEST, Json(refusal)).into_response()
}

/// A stable fake id for an interaction's original response.
fn original_id(token: &str) -> u64 {
    token.bytes().fold(7_000_000u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"message": "404: Not Found", "code": 0}))).into_response()
}

/// A message object as REST and the gateway return it.
fn message_object(id: u64, channel: &str, author: Value, content: &str) -> Value {
    json!({
        "id": id.to_string(),
        "channel_id": channel,
        "author": author,
        "content": content,
        "timestamp": "2026-01-01T00:00:00.000000+00:00",
        "edited_timestamp": null,
        "tts": false,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": false,
        "type": 0,
        "components": [],
    })
}

/// The bot's message made from a create request's body: its text, buttons and flags.
fn message_json(id: u64, channel: &str, body: &Value) -> Value {
    let content = body["content"].as_str().unwrap_or("");
    let mut msg = message_object(id, channel, user(BOT_ID, "lore", true), content);
    if body.get("message_reference").is_some() {
        msg["type"] = 19.into();
    }
    if body["components"].is_array() {
        msg["components"] = body["components"].clone();
    }
    msg["flags"] = (body["flags"].as_u64().unwrap_or(0) & EPHEMERAL).into();
    msg
}

/// Creates a message; with an enforced nonce seen before in this channel, returns the
/// message made then instead, as Discord does.
fn new_message(state: &Shared, channel: &str, body: &Value) -> Value {
    let nonce = match (&body["nonce"], &body["enforce_nonce"]) {
        (Value::String(nonce), Value::Bool(true)) => Some((channel.to_string(), nonce.clone())),
        _ => None,
    };
    if let Some(made) = nonce.as_ref().and_then(|n| state.nonces.lock().unwrap().get(n).copied()) {
        if let Some(message) = state.messages.lock().unwrap().get(&made) {
            return message.clone();
        }
    }
    let id = state.next_id.fetch_add(1, Ordering::SeqCst);
    if let Some(nonce) = nonce {
        state.nonces.lock().unwrap().insert(nonce, id);
    }
    let msg = message_json(id, channel, body);
    state.messages.lock().unwrap().insert(id, msg.clone());
    msg
}

fn delete_own_message(state: &Shared, id: &str) -> Response {
    let mut messages = state.messages.lock().unwrap();
    match id.parse::<u64>().ok().and_then(|id| messages.remove(&id)) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => unknown_message(),
    }
}

fn edit_message(state: &Shared, id: &str, body: &Value) -> Response {
    let mut messages = state.messages.lock().unwrap();
    let Some(msg) = id.parse::<u64>().ok().and_then(|id| messages.get_mut(&id)) else {
        return unknown_message();
    };
    if let Some(content) = body.get("content") {
        msg["content"] = content.clone();
    }
    if let Some(components) = body.get("components") {
        msg["components"] = components.clone();
    }
    msg["edited_timestamp"] = "2026-01-01T00:00:02.000000+00:00".into();
    Json(msg.clone()).into_response()
}
