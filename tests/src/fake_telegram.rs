//! A fake Telegram Bot API server for the real teloxide client: `POST /bot<TOKEN>/<method>`
//! with JSON or form bodies on 127.0.0.1. Tests push updates that `getUpdates` long polling
//! hands out (honouring `offset` and `timeout`), script 429s and failures, and read every
//! request back. Forum topics are modelled as Telegram sends them: each message of a topic
//! carries `message_thread_id` and replies to the topic's first message.
//!
//! Inline keyboards too: the `reply_markup` of `sendMessage` and `editMessageText` is kept
//! with the message (an edit that does not name it again drops it, as Telegram does; callback
//! data over 64 bytes is refused), a click arrives as a `callback_query` update carrying the
//! clicked message with its keyboard, `answerCallbackQuery` answers a query once (a second
//! answer, an unknown id or a text over 200 characters is refused), and a user's reply to a
//! bot message carries that message, keyboard and topic included, as `reply_to_message`.
//!
//! Not modelled: webhooks, files and multipart uploads, inline mode, most methods, HTML
//! validation beyond stripping tags for the stored text, per-chat rate limits other than
//! scripted ones, entity offsets in UTF-16 (mentions are found by text), queries that expire
//! unanswered.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::{Recorded, Server};

/// The bot's id and username in the fake.
pub const BOT_ID: i64 = 7_000_001;
pub const BOT_USERNAME: &str = "LoreTestBot";
/// The status [`Recorded`] shows for a request whose connection the fake broke, or that it
/// never answered.
pub const DROPPED: u16 = 0;

pub struct FakeTelegram {
    token: String,
    state: Arc<Shared>,
    server: Server,
}

struct Shared {
    token: String,
    requests: Mutex<Vec<Recorded>>,
    /// Updates not yet confirmed by a later offset.
    updates: Mutex<Vec<Value>>,
    /// The kinds of update the last poll that named them asked for (Telegram remembers
    /// them); `None`: every kind.
    allowed: Mutex<Option<Vec<String>>>,
    new_update: Notify,
    next_update: AtomicI64,
    next_message: AtomicI64,
    /// Scripted failures: (method, how many left, what goes wrong).
    scripts: Mutex<Vec<(String, u32, Fault)>>,
    /// Messages the bot sent, by (chat, message_id).
    sent: Mutex<HashMap<(i64, i64), Sent>>,
    /// The first message of each forum topic, by topic id.
    topics: Mutex<HashMap<i64, Value>>,
    /// Each chat users wrote in, as the bot's messages there show it.
    chats: Mutex<HashMap<i64, Chat>>,
    /// Callback queries not answered yet.
    unanswered: Mutex<HashSet<String>>,
    next_query: AtomicI64,
}

/// A message the bot sent, as Telegram keeps it.
#[derive(Clone)]
struct Sent {
    /// As sent (HTML).
    text: String,
    /// The forum topic it was sent to.
    topic: Option<i64>,
    /// Its inline keyboard, as sent.
    keyboard: Option<Value>,
}

/// What goes wrong with a request, as the real Bot API or the network between can make it.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// 429 with `parameters.retry_after` in seconds.
    RetryAfter(u32),
    /// The connection breaks in the middle of the response.
    Drop,
    /// A 5xx with the Bot API's error body (teloxide waits 10 s before it reports one).
    ServerError(u16),
    /// No answer at all: the client's timeout fires. The request is not carried out.
    Hang,
}

impl FakeTelegram {
    pub async fn start(token: &str) -> Self {
        let state = Arc::new(Shared {
            token: token.to_string(),
            requests: Mutex::default(),
            updates: Mutex::default(),
            allowed: Mutex::default(),
            new_update: Notify::new(),
            next_update: AtomicI64::new(100),
            next_message: AtomicI64::new(500),
            scripts: Mutex::default(),
            sent: Mutex::default(),
            topics: Mutex::default(),
            chats: Mutex::default(),
            unanswered: Mutex::default(),
            next_query: AtomicI64::new(1),
        });
        let app = Router::new().fallback(handle).with_state(state.clone());
        let server = Server::start(app).await;
        Self { token: token.to_string(), state, server }
    }

    /// What to give teloxide as its API URL.
    pub fn api_url(&self) -> String {
        format!("http://{}/", self.server.addr)
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Every request so far; `path` holds the method name.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Successful requests of one method, by body.
    pub fn calls(&self, method: &str) -> Vec<Value> {
        self.requests().into_iter().filter(|r| r.path == method && r.status == 200).map(|r| r.body).collect()
    }

    /// The next `count` calls of `method` get a 429 with `retry_after`.
    pub fn rate_limit(&self, method: &str, count: u32, retry_after_secs: u32) {
        self.inject(method, count, Fault::RetryAfter(retry_after_secs));
    }

    /// The next `count` calls of `method` lose their connection mid-response. (Not a 5xx:
    /// teloxide waits 10 s after a server error before it reports it.)
    pub fn fail(&self, method: &str, count: u32) {
        self.inject(method, count, Fault::Drop);
    }

    /// The next `count` calls of `method` meet `fault`.
    pub fn inject(&self, method: &str, count: u32, fault: Fault) {
        self.state.scripts.lock().unwrap().push((method.to_string(), count, fault));
        // Wakes a waiting long poll, which then fails.
        self.state.new_update.notify_waiters();
    }

    /// A moderator deletes the bot's message `id` in `chat`.
    pub fn delete_message(&self, chat: i64, id: i64) {
        self.state.sent.lock().unwrap().remove(&(chat, id));
    }

    /// Ids of the bot's messages in `chat` still there, in order.
    pub fn message_ids(&self, chat: i64) -> Vec<i64> {
        let mut ids: Vec<i64> =
            self.state.sent.lock().unwrap().keys().filter(|(c, _)| *c == chat).map(|(_, id)| *id).collect();
        ids.sort_unstable();
        ids
    }

    /// Queues a text message from a user; returns its message id.
    pub fn push_message(&self, chat: Chat, from: i64, text: &str) -> i64 {
        self.queue(self.message(chat, from, false, text))
    }

    /// Queues a user's reply to the bot's message `replied` in `chat`: it carries that message
    /// as Telegram does, with its inline keyboard, and lands in its forum topic if it has one.
    pub fn push_reply_to(&self, chat: Chat, from: i64, text: &str, replied: i64) -> i64 {
        let mut message = self.message(chat, from, false, text);
        let sent = self.sent(chat.id(), replied);
        if let Some(topic) = sent.topic {
            message["message_thread_id"] = topic.into();
            message["is_topic_message"] = true.into();
        }
        message["reply_to_message"] = bot_message(&self.state, chat.id(), replied, &sent);
        self.queue(message)
    }

    /// `from` clicks the button with `data` under the bot's message `message` in `chat`:
    /// queues the `callback_query` update Telegram sends; returns the query's id.
    pub fn click(&self, chat: Chat, message: i64, from: i64, data: &str) -> String {
        let sent = self.sent(chat.id(), message);
        let id = format!("{}", 4_000_000_000_000 + self.state.next_query.fetch_add(1, Ordering::SeqCst));
        self.state.unanswered.lock().unwrap().insert(id.clone());
        let query = json!({
            "id": id,
            "from": user(from, false),
            "message": bot_message(&self.state, chat.id(), message, &sent),
            // The same for every message of one chat.
            "chat_instance": format!("{}", chat.id().unsigned_abs() * 7 + 1),
            "data": data,
        });
        self.push_update("callback_query", query);
        id
    }

    /// The (label, callback data) of each button under the bot's message `message` in `chat`,
    /// row by row.
    pub fn buttons(&self, chat: i64, message: i64) -> Vec<(String, String)> {
        let keyboard = self.sent(chat, message).keyboard.unwrap_or(Value::Null);
        let rows = keyboard["inline_keyboard"].as_array().cloned().unwrap_or_default();
        let buttons = rows.iter().flat_map(|row| row.as_array().cloned().unwrap_or_default());
        let text = |button: &Value, key: &str| button[key].as_str().unwrap_or_default().to_string();
        buttons.map(|b| (text(&b, "text"), text(&b, "callback_data"))).collect()
    }

    /// The successful `answerCallbackQuery` calls for query `query`, by body.
    pub fn click_answers(&self, query: &str) -> Vec<Value> {
        self.calls("answerCallbackQuery").into_iter().filter(|b| b["callback_query_id"] == query).collect()
    }

    fn sent(&self, chat: i64, message: i64) -> Sent {
        let sent = self.state.sent.lock().unwrap();
        sent.get(&(chat, message)).cloned().unwrap_or_else(|| panic!("the bot sent no message {message} to {chat}"))
    }

    /// Queues a message from a user that replies to an earlier message of `replied_author`.
    pub fn push_reply(&self, chat: Chat, from: i64, text: &str, replied_author: i64) -> i64 {
        let mut message = self.message(chat, from, false, text);
        message["reply_to_message"] = json!({
            "message_id": message["message_id"].as_i64().unwrap_or_default() - 1,
            "date": 1_767_225_500,
            "chat": chat.json(),
            "from": user(replied_author, replied_author == BOT_ID),
            "text": "earlier",
        });
        self.queue(message)
    }

    /// Queues a text message written by another bot.
    pub fn push_bot_message(&self, chat: Chat, from: i64, text: &str) -> i64 {
        self.queue(self.message(chat, from, true, text))
    }

    /// Opens a topic in a forum: `creator` writes its first message (a service message with
    /// no text, queued like any update). Returns the topic's id, that message's id.
    pub fn open_topic(&self, chat: Chat, creator: i64, name: &str) -> i64 {
        let mut first = self.message(chat, creator, creator == BOT_ID, "");
        let topic = first["message_id"].as_i64().unwrap_or_default();
        let first = first.as_object_mut().expect("a message is an object");
        first.remove("text");
        first.insert("message_thread_id".into(), topic.into());
        first.insert("is_topic_message".into(), true.into());
        first.insert("forum_topic_created".into(), json!({"name": name, "icon_color": 7_322_096}));
        let first = Value::Object(first.clone());
        self.state.topics.lock().unwrap().insert(topic, first.clone());
        self.queue(first)
    }

    /// Queues a user's message in a forum topic opened with [`FakeTelegram::open_topic`].
    pub fn push_topic_message(&self, chat: Chat, topic: i64, from: i64, text: &str) -> i64 {
        let mut message = self.message(chat, from, false, text);
        message["message_thread_id"] = topic.into();
        message["is_topic_message"] = true.into();
        message["reply_to_message"] = self.state.topics.lock().unwrap().get(&topic).expect("an open topic").clone();
        self.queue(message)
    }

    /// A new message in `chat`, with the mention entities Telegram would add.
    fn message(&self, chat: Chat, from: i64, is_bot: bool, text: &str) -> Value {
        self.state.chats.lock().unwrap().insert(chat.id(), chat);
        let message_id = self.state.next_message.fetch_add(1, Ordering::SeqCst);
        let mut message = json!({
            "message_id": message_id,
            "date": 1_767_225_600,
            "chat": chat.json(),
            "from": user(from, is_bot),
            "text": text,
        });
        let mentions = mention_entities(text);
        if !mentions.is_empty() {
            message["entities"] = mentions.into();
        }
        message
    }

    /// Hands `message` to the next poll; returns its id.
    fn queue(&self, message: Value) -> i64 {
        let message_id = message["message_id"].as_i64().unwrap_or_default();
        self.push_update("message", message);
        message_id
    }

    /// Hands an update of `kind` to the next poll.
    fn push_update(&self, kind: &str, content: Value) {
        let update_id = self.state.next_update.fetch_add(1, Ordering::SeqCst);
        self.state.updates.lock().unwrap().push(json!({"update_id": update_id, kind: content}));
        self.state.new_update.notify_waiters();
    }

    /// Text of every message the bot sent to `chat` (HTML as sent, after edits), in order.
    pub fn shown_in(&self, chat: i64) -> Vec<String> {
        let sent = self.state.sent.lock().unwrap();
        let mut mine: Vec<_> = sent.iter().filter(|((c, _), _)| *c == chat).collect();
        mine.sort_by_key(|((_, id), _)| *id);
        mine.into_iter().map(|(_, sent)| sent.text.clone()).collect()
    }
}

/// A chat an update comes from.
#[derive(Clone, Copy)]
pub enum Chat {
    Private(i64),
    Group(i64),
    /// A supergroup with topics.
    Forum(i64),
}

impl Chat {
    pub fn id(self) -> i64 {
        match self {
            Self::Private(id) | Self::Group(id) | Self::Forum(id) => id,
        }
    }

    fn json(self) -> Value {
        match self {
            Self::Private(id) => json!({"id": id, "type": "private", "first_name": "Ann"}),
            Self::Group(id) => json!({"id": id, "type": "supergroup", "title": "Readers"}),
            Self::Forum(id) => json!({"id": id, "type": "supergroup", "title": "Readers", "is_forum": true}),
        }
    }
}

/// Telegram marks each `@username` (letters, digits and `_`, not inside a word) as a mention.
fn mention_entities(text: &str) -> Vec<Value> {
    let in_username = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut entities = Vec::new();
    for (at, _) in text.match_indices('@') {
        if text[..at].chars().next_back().is_some_and(in_username) {
            continue;
        }
        let name = &text[at + 1..];
        let name_len = name.find(|c: char| !in_username(c)).unwrap_or(name.len());
        if name_len > 0 {
            let offset = text[..at].encode_utf16().count();
            entities.push(json!({"type": "mention", "offset": offset, "length": 1 + name_len}));
        }
    }
    entities
}

fn user(id: i64, is_bot: bool) -> Value {
    if id == BOT_ID {
        return json!({"id": id, "is_bot": true, "first_name": "Lore", "username": BOT_USERNAME});
    }
    json!({"id": id, "is_bot": is_bot, "first_name": format!("User{id}"), "username": format!("user{id}")})
}

fn ok(result: Value) -> Response {
    Json(json!({"ok": true, "result": result})).into_response()
}

fn error(code: u16, description: &str) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    (status, Json(json!({"ok": false, "error_code": code, "description": description}))).into_response()
}

async fn handle(State(state): State<Arc<Shared>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().trim_start_matches('/');
    let (token, method) = path.split_once('/').unwrap_or((path, ""));
    // Telegram method names are case-insensitive; teloxide sends `GetMe`. Record them the
    // way the Bot API documents them (`getMe`).
    let method = match method.chars().next() {
        Some(first) => first.to_lowercase().chain(method.chars().skip(1)).collect::<String>(),
        None => String::new(),
    };
    let body = parse_body(&headers, &body);
    let fault = scripted(&state, &method);
    if let Some(Fault::Hang) = fault {
        record(&state, method, body, DROPPED);
        return std::future::pending().await;
    }
    let response = if token.strip_prefix("bot") != Some(state.token.as_str()) {
        error(401, "Unauthorized")
    } else if let Some(fault) = fault {
        failure_response(fault)
    } else {
        route(&state, &method, &body).await
    };
    let status = match response.extensions().get::<Dropped>() {
        Some(_) => DROPPED,
        None => response.status().as_u16(),
    };
    record(&state, method, body, status);
    response
}

fn record(state: &Shared, method: String, body: Value, status: u16) {
    state.requests.lock().unwrap().push(Recorded {
        method: "POST".into(),
        path: method,
        body,
        status,
        at: tokio::time::Instant::now(),
    });
}

/// Marks a response whose connection the fake breaks.
#[derive(Clone, Copy)]
struct Dropped;

fn failure_response(fault: Fault) -> Response {
    match fault {
        Fault::RetryAfter(after) => (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({
                "ok": false,
                "error_code": 429,
                "description": format!("Too Many Requests: retry after {after}"),
                "parameters": {"retry_after": after},
            })),
        )
            .into_response(),
        Fault::ServerError(code) => {
            let reason = StatusCode::from_u16(code).ok().and_then(|s| s.canonical_reason()).unwrap_or("Server Error");
            error(code, reason)
        }
        Fault::Hang => unreachable!("a hung request gets no response"),
        Fault::Drop => {
            // A body that fails makes the server abort the connection.
            let broken = futures::stream::once(async { Err::<Bytes, _>(std::io::Error::other("connection dropped")) });
            let mut response =
                (StatusCode::OK, [("content-type", "application/json")], Body::from_stream(broken)).into_response();
            response.extensions_mut().insert(Dropped);
            response
        }
    }
}

fn scripted(state: &Shared, method: &str) -> Option<Fault> {
    let mut scripts = state.scripts.lock().unwrap();
    let (_, left, failure) = scripts.iter_mut().find(|(m, left, _)| m == method && *left > 0)?;
    *left -= 1;
    Some(*failure)
}

async fn route(state: &Shared, method: &str, body: &Value) -> Response {
    match method {
        "getMe" => ok(json!({
            "id": BOT_ID, "is_bot": true, "first_name": "Lore", "username": BOT_USERNAME,
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "can_connect_to_business": false,
            "has_main_web_app": false,
        })),
        "getWebhookInfo" => ok(json!({"url": "", "has_custom_certificate": false, "pending_update_count": 0})),
        "deleteWebhook" | "setMyCommands" | "sendChatAction" => ok(json!(true)),
        "getUpdates" => get_updates(state, body).await,
        "sendMessage" => {
            let chat = body["chat_id"].as_i64().unwrap_or_default();
            let text = body["text"].as_str().unwrap_or_default().to_string();
            if text.is_empty() {
                return error(400, "Bad Request: message text is empty");
            }
            let keyboard = body.get("reply_markup").cloned();
            if !callback_data_fits(keyboard.as_ref()) {
                return error(400, "Bad Request: BUTTON_DATA_INVALID");
            }
            let id = state.next_message.fetch_add(1, Ordering::SeqCst);
            let sent = Sent { text, topic: body["message_thread_id"].as_i64(), keyboard };
            let message = bot_message(state, chat, id, &sent);
            state.sent.lock().unwrap().insert((chat, id), sent);
            ok(message)
        }
        "answerCallbackQuery" => {
            let query = body["callback_query_id"].as_str().unwrap_or_default();
            if body["text"].as_str().is_some_and(|t| t.chars().count() > 200) {
                return error(400, "Bad Request: MESSAGE_TOO_LONG");
            }
            if state.unanswered.lock().unwrap().remove(query) {
                ok(json!(true))
            } else {
                error(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
            }
        }
        "deleteMessage" => {
            let chat = body["chat_id"].as_i64().unwrap_or_default();
            let id = body["message_id"].as_i64().unwrap_or_default();
            match state.sent.lock().unwrap().remove(&(chat, id)) {
                Some(_) => ok(json!(true)),
                None => error(400, "Bad Request: message to delete not found"),
            }
        }
        "editMessageText" => {
            let chat = body["chat_id"].as_i64().unwrap_or_default();
            let id = body["message_id"].as_i64().unwrap_or_default();
            let text = body["text"].as_str().unwrap_or_default().to_string();
            let keyboard = body.get("reply_markup").cloned();
            if !callback_data_fits(keyboard.as_ref()) {
                return error(400, "Bad Request: BUTTON_DATA_INVALID");
            }
            let mut sent = state.sent.lock().unwrap();
            match sent.get_mut(&(chat, id)) {
                None => error(400, "Bad Request: message to edit not found"),
                Some(old) if old.text == text && old.keyboard == keyboard => error(
                    400,
                    "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
                ),
                Some(old) => {
                    // A keyboard the edit does not name again is gone.
                    *old = Sent { text, keyboard, ..old.clone() };
                    let edited = old.clone();
                    drop(sent);
                    ok(bot_message(state, chat, id, &edited))
                }
            }
        }
        _ => error(404, "Not Found: method not found"),
    }
}

/// The bot's message `id` in `chat` as the Bot API shows it.
fn bot_message(state: &Shared, chat: i64, id: i64, sent: &Sent) -> Value {
    let seen = state.chats.lock().unwrap().get(&chat).copied();
    let chat = seen.unwrap_or(if chat > 0 { Chat::Private(chat) } else { Chat::Group(chat) });
    let mut message = json!({
        "message_id": id,
        "date": 1_767_225_601,
        "chat": chat.json(),
        "from": user(BOT_ID, true),
        "text": strip_tags(&sent.text),
    });
    if let Some(topic) = sent.topic {
        message["message_thread_id"] = topic.into();
        message["is_topic_message"] = true.into();
    }
    if let Some(keyboard) = &sent.keyboard {
        message["reply_markup"] = keyboard.clone();
    }
    message
}

/// Whether every button's callback data is within Telegram's 64 bytes.
fn callback_data_fits(keyboard: Option<&Value>) -> bool {
    let rows = keyboard.and_then(|k| k["inline_keyboard"].as_array()).cloned().unwrap_or_default();
    let mut buttons = rows.iter().filter_map(Value::as_array).flatten();
    buttons.all(|b| b["callback_data"].as_str().is_none_or(|data| data.len() <= 64))
}

/// The text a user would see: tags removed, the three entities unescaped.
pub fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

async fn get_updates(state: &Shared, body: &Value) -> Response {
    let offset = body["offset"].as_i64().unwrap_or(0);
    if let Some(kinds) = body["allowed_updates"].as_array() {
        let kinds = kinds.iter().filter_map(|k| k.as_str().map(String::from)).collect();
        *state.allowed.lock().unwrap() = Some(kinds);
    }
    let timeout = Duration::from_secs(body["timeout"].as_u64().unwrap_or(0));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // Register interest before looking, so a push between the look and the wait is seen.
        let notified = state.new_update.notified();
        // A failure scripted while this poll waits breaks it, like a dropped connection.
        match scripted(state, "getUpdates") {
            Some(Fault::Hang) => return std::future::pending().await,
            Some(fault) => return failure_response(fault),
            None => {}
        }
        {
            let mut updates = state.updates.lock().unwrap();
            // An offset confirms every update before it: Telegram forgets them, and never
            // sends a kind the bot did not ask for.
            let allowed = state.allowed.lock().unwrap().clone();
            let asked_for = |u: &Value| {
                allowed.as_ref().is_none_or(|kinds| kinds.iter().any(|kind| u.get(kind.as_str()).is_some()))
            };
            updates.retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset && asked_for(u));
            if !updates.is_empty() {
                return ok(Value::Array(updates.clone()));
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return ok(json!([]));
        }
    }
}

/// JSON, or `application/x-www-form-urlencoded` turned into a JSON object (numbers and
/// JSON-looking values parsed).
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Value {
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return serde_json::from_slice(body).unwrap_or(Value::Null);
    }
    let mut map = serde_json::Map::new();
    for pair in String::from_utf8_lossy(body).split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        let value = serde_json::from_str(&v).unwrap_or(Value::String(v));
        map.insert(percent_decode(k), value);
    }
    Value::Object(map)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
