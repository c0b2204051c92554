//! Lore over HTTP (`server:` in the config): an OpenAI-compatible API whose models are the
//! bots (grounded answers) and the generator itself (plain completion), embeddings, a chat
//! page, health and readiness. Questions join the same line as the chats' (`Router`).
//!
//! Keys come from environment variables, each limited to some bots; with no key the server
//! listens on loopback only (the config refuses anything else) and answers only to its
//! own names (`hosts.rs`). Connections are capped and timed out (`connections.rs`);
//! `/ready` and `/metrics` read knowledge bases at most every 15 s and show details to
//! key holders only (`health.rs`). The routes answer from an [`ApiState`] (`state.rs`):
//! the bots, the generator and the embedder, the keys, the cited passages and the health
//! data, each behind a trait, built from the app in the daemon (`from_app.rs`) and from
//! stand-ins in the unit tests.

mod connections;
mod feedback;
mod from_app;
mod health;
mod hosts;
mod openai;
mod quality;
mod sources;
mod state;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::app::{Answering, App};
use crate::config::ServerConfig;
use crate::question::router::Router;

pub use openai::ApiError;
pub(crate) use state::ApiState;
use state::Key;

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

/// What the routes serve: what they answer from, and how the server lets requests in.
pub(crate) struct Server {
    api: ApiState,
    hosts: hosts::AllowedHosts,
    side_work: openai::SideWork,
    connections: connections::Open,
    max_embedding_inputs: usize,
}

type Shared = Arc<Server>;

impl Server {
    /// The server for `cfg`, listening on `listen` (where it is bound), answering from `api`.
    fn new(cfg: &ServerConfig, listen: std::net::SocketAddr, api: ApiState) -> Self {
        Self {
            hosts: hosts::AllowedHosts::new(listen, &cfg.allowed_hosts, !api.keys.is_empty()),
            side_work: openai::SideWork::default(),
            connections: connections::Open::default(),
            max_embedding_inputs: cfg.max_embedding_inputs,
            api,
        }
    }
}

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
    let api = ApiState::of_app(&app, app.pipeline().model, router, adapters, keys);
    let server = Arc::new(Server::new(cfg, addr, api));
    let open = server.connections.clone();
    let routes = routes(server, cfg.max_body_bytes);
    Ok(tokio::spawn(connections::accept_loop(listener, routes, connections::Limits::from(cfg), open, shutdown)))
}

fn routes(server: Shared, max_body_bytes: usize) -> axum::Router {
    let api = axum::Router::new()
        .route("/v1/models", get(openai::models))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/tokenize", post(openai::tokenize))
        .route("/v1/sources/{id}", get(sources::source))
        .route("/v1/feedback", post(feedback::feedback))
        .route("/v1/quality", get(quality::figures))
        .route("/v1/gold", post(quality::correct))
        .layer(axum::middleware::from_fn_with_state(server.clone(), authenticate))
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes));
    let named = axum::Router::new()
        .route("/", get(page))
        .route("/quality", get(quality::page))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .merge(api)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(server.clone(), check_host));
    // A liveness probe says only "ok", whatever name it uses.
    axum::Router::new().route("/health", get(|| async { "ok" })).merge(named).with_state(server)
}

/// Refuses requests addressed to a name that is not this server's (see `hosts.rs`).
async fn check_host(State(server): State<Shared>, request: Request, next: Next) -> Response {
    match server.hosts.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
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
    let caller = match caller(&server.api.keys, request.headers()) {
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
