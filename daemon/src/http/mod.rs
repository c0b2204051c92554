//! Lore over HTTP (`server:` in the config): an OpenAI-compatible API whose models are the
//! bots (grounded answers) and the generator itself (plain completion), embeddings, a chat
//! page, health and readiness. Questions join the same line as the chats' (`Router`).
//!
//! Keys come from environment variables, each limited to some bots; with no key the server
//! listens on loopback only (the config refuses anything else).

mod openai;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::app::{Answering, App};
use crate::config::ServerConfig;
use crate::router::Router;

pub use openai::ApiError;

/// What each bot's platform connection is doing, for `/ready`.
#[derive(Clone, Default)]
pub struct AdapterStates(Arc<Mutex<BTreeMap<String, String>>>);

impl AdapterStates {
    pub fn set(&self, bot: &str, state: impl Into<String>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(bot.to_string(), state.into());
    }

    fn all(&self) -> BTreeMap<String, String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One API key as the server checks it.
struct Key {
    value: String,
    /// Empty: every model.
    bots: Vec<String>,
}

/// What a request was let in with.
#[derive(Clone)]
pub(crate) struct Caller {
    /// Names the caller in the line (so one key cannot crowd out everyone else).
    pub(crate) id: String,
    bots: Option<Vec<String>>,
}

impl Caller {
    pub(crate) fn may_use(&self, model: &str) -> bool {
        self.bots.as_ref().is_none_or(|bots| bots.iter().any(|b| b == model))
    }
}

pub(crate) struct Server {
    app: Arc<App>,
    router: Arc<Router<Answering>>,
    adapters: AdapterStates,
    keys: Vec<Key>,
}

type Shared = Arc<Server>;

/// Reads the keys and binds the port (so that a taken port or a missing key stops the
/// daemon at once), then serves in the background until `shutdown`.
pub async fn start(
    cfg: &ServerConfig,
    app: Arc<App>,
    router: Arc<Router<Answering>>,
    adapters: AdapterStates,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let keys = read_keys(cfg)?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("server.listen: cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    if keys.is_empty() {
        tracing::warn!(%addr, "HTTP server without API keys: anyone on this machine may use it (loopback only)");
    } else {
        tracing::info!(%addr, keys = keys.len(), "HTTP server listening");
    }
    let routes = routes(Arc::new(Server { app, router, adapters, keys }), cfg.max_body_bytes);
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, routes).with_graceful_shutdown(shutdown.cancelled_owned()).await {
            tracing::error!(%error, "the HTTP server stopped");
        }
    }))
}

fn routes(server: Shared, max_body_bytes: usize) -> axum::Router {
    let api = axum::Router::new()
        .route("/v1/models", get(openai::models))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/tokenize", post(openai::tokenize))
        .layer(axum::middleware::from_fn_with_state(server.clone(), authenticate))
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes));
    axum::Router::new()
        .route("/", get(page))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(api)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(server)
}

fn read_keys(cfg: &ServerConfig) -> anyhow::Result<Vec<Key>> {
    cfg.api_keys
        .iter()
        .enumerate()
        .map(|(i, k)| match std::env::var(&k.key_env) {
            Ok(value) if !value.trim().is_empty() => Ok(Key { value: value.trim().to_string(), bots: k.bots.clone() }),
            _ => anyhow::bail!("server.api_keys.{i}.key_env: environment variable {} holds no key", k.key_env),
        })
        .collect()
}

/// Checks the bearer key and records who is calling.
async fn authenticate(State(server): State<Shared>, mut request: Request, next: Next) -> Response {
    let caller = match caller(&server.keys, request.headers()) {
        Ok(caller) => caller,
        Err(error) => return error.into_response(),
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

fn caller(keys: &[Key], headers: &HeaderMap) -> Result<Caller, ApiError> {
    if keys.is_empty() {
        return Ok(Caller { id: "api".into(), bots: None });
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let unauthorized = || ApiError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", "missing or wrong API key");
    let given = given.ok_or_else(unauthorized)?;
    let (index, key) =
        keys.iter().enumerate().find(|(_, k)| constant_time_eq(&k.value, given)).ok_or_else(unauthorized)?;
    Ok(Caller { id: format!("api-key-{index}"), bots: (!key.bots.is_empty()).then(|| key.bots.clone()) })
}

/// Compares without stopping at the first difference, so timing does not leak the key.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

/// Prometheus' text format; the gauges of state are read now.
async fn metrics(State(server): State<Shared>) -> Response {
    let line = server.router.line();
    crate::metrics::gauge("lore_waiting_questions", line.waiting() as f64);
    crate::metrics::gauge("lore_answers_in_progress", line.answering() as f64);
    if let Some(generator) = &server.app.generator {
        crate::metrics::gauge("lore_kv_cells", generator.kv_cells() as f64);
        crate::metrics::gauge("lore_kv_cells_in_use", generator.kv_cells_in_use() as f64);
    }
    for kb in server.app.config.bots.values().map(|b| &b.knowledge_base).collect::<std::collections::BTreeSet<_>>() {
        if let Ok(rows) = async { server.app.kb(kb)?.count().await.map_err(anyhow::Error::from) }.await {
            crate::metrics::kb_rows(kb, rows);
        }
    }
    let text = crate::metrics::handle().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Ready when the models are loaded (they are, once the server runs), every bot's knowledge
/// base opens, and every adapter is running.
async fn ready(State(server): State<Shared>) -> Response {
    let mut kbs = BTreeMap::new();
    let mut ok = true;
    for (name, bot) in &server.app.config.bots {
        let kb = &bot.knowledge_base;
        if kbs.contains_key(kb) {
            continue;
        }
        let state = match server.app.kb(kb) {
            Ok(handle) => match handle.count().await {
                Ok(0) => json!({"ok": false, "rows": 0, "error": "empty: run `lore ingest`", "bot": name}),
                Ok(rows) => json!({"ok": true, "rows": rows}),
                Err(error) => json!({"ok": false, "error": format!("{error:#}"), "bot": name}),
            },
            Err(error) => json!({"ok": false, "error": format!("{error:#}"), "bot": name}),
        };
        ok &= state["ok"] == true;
        kbs.insert(kb.clone(), state);
    }
    let adapters = server.adapters.all();
    ok &= adapters.values().all(|state| state == "running");
    if let Some(pool) = &server.app.remote {
        ok &= pool.endpoints().iter().any(|e| e.healthy);
    }
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "ready": ok,
        "models": {"generator": server.app.generator.is_some() || server.app.remote.is_some(), "embedder": true},
        "engines": server.app.remote.as_ref().map(|pool| pool.endpoints().iter().map(|e| json!({"url": e.url, "healthy": e.healthy, "in_flight": e.in_flight})).collect::<Vec<_>>()),
        "knowledge_bases": kbs,
        "adapters": adapters,
    });
    (status, Json(body)).into_response()
}
