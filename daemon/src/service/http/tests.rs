//! The HTTP server on stand-ins, with no model files and no knowledge base on disk: an
//! [`ApiState`] of `lore_core::testing`'s models (a word-token chat model, a hashing
//! embedder), the real `Router` and line with a scripted answerer, passages and health
//! data in memory. Keys, names, limits, errors and the response shapes go through the axum
//! router (`oneshot`); connections go over real loopback sockets through the server's own
//! accept loop. `from_app.rs` tests the daemon's own parts on a knowledge base on disk.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::Request as HttpRequest;
use lore_core::testing::{EchoModel, HashEmbedder};
use lore_core::{Chunk, Embedder, GenerateError, PromptText, ReplySink, SourceRef, StopReason};
use lore_remote::EndpointState;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

use super::state::{EmbedderModel, GeneratorModel, Health, LocalModel, Passage, Rows, Sources};
use super::*;
use crate::config::Config;
use crate::question::confidence::Judgement;
use crate::question::evidence::Quote;
use crate::question::pipeline::{Judged, Outcome, Reranking};
use crate::question::prompt::Turn;
use crate::question::router::{Answerer, Place};

pub(super) const CONFIG: &str = "\
models:
  generator:
    path: /models/gen.gguf
    parallel: 1
    context_tokens: 512
    max_answer_tokens: 64
  embedder:
    path: /models/emb.gguf
retrieval:
  rerankers: []
knowledge_bases:
  bees: {}
  wasps: {}
bots:
  docs:
    knowledge_base: bees
    memory_turns: 2
  guide:
    knowledge_base: wasps
server:
  listen: 127.0.0.1:8080
";

const HOST: &str = "127.0.0.1:8080";

/// The generator's and the embedder's names (their files' names).
const GENERATOR: &str = "gen";
const EMBEDDER: &str = "emb";

/// The one passage bot `docs` cites.
fn passage() -> Chunk {
    Chunk::new("bees.md", 0, 1, 1, "Bees dance.".into())
}

/// What the scripted bots answer: `pieces` streamed one after another, then finished with
/// `sources` (or failing with `fails` after the pieces).
#[derive(Clone)]
struct Reply {
    pieces: Vec<&'static str>,
    sources: Vec<SourceRef>,
    abstained: bool,
    confidence: Option<f64>,
    quote: Option<Quote>,
    stop: Option<StopReason>,
    fails: Option<Failure>,
}

/// How a scripted answer fails.
type Failure = fn() -> anyhow::Error;

impl Default for Reply {
    /// "Bees dance [1]." in two pieces, citing the passage about bees, sure and quoted.
    fn default() -> Self {
        let source = SourceRef { number: 1, source: "bees.md".into(), location: "line 1".into(), id: passage().id };
        let quote = Quote { sentence: "Bees dance.".into(), passage: 1, location: "line 1".into(), score: 0.9 };
        Self {
            pieces: vec!["Bees ", "dance [1]."],
            sources: vec![source],
            abstained: false,
            confidence: Some(0.75),
            quote: Some(quote),
            stop: Some(StopReason::EndOfText),
            fails: None,
        }
    }
}

impl Reply {
    /// An abstention: one piece, no sources, nothing judged or quoted.
    fn abstention() -> Self {
        let (sources, quote) = (Vec::new(), None);
        Self { pieces: vec!["I don't know."], sources, abstained: true, confidence: None, quote, ..Self::default() }
    }

    fn outcome(self, text: String) -> Outcome {
        let judgement = self.confidence.map(|probability| Judgement { probability, threshold: 0.5 });
        Outcome {
            text,
            passages: Vec::new(),
            abstained: self.abstained,
            stop: self.stop,
            retrieval_time: Duration::ZERO,
            first_token: None,
            total_time: Duration::ZERO,
            generated_tokens: 0,
            quote: self.quote,
            judged: Judged { judgement, ..Judged::default() },
            sources: self.sources,
        }
    }
}

/// The bots' answers as a test sets them, and the questions they were asked.
#[derive(Default)]
struct Script {
    reply: std::sync::Mutex<Reply>,
    asked: std::sync::Mutex<Vec<(String, Vec<Turn>)>>,
}

impl Script {
    fn set(&self, reply: Reply) {
        *self.reply.lock().unwrap() = reply;
    }

    /// The questions asked so far, with the conversations they came with.
    fn asked(&self) -> Vec<(String, Vec<Turn>)> {
        self.asked.lock().unwrap().clone()
    }
}

/// The router's answerer: answers as its [`Script`] says, as the pipeline would (updates,
/// then the final text with its sources).
struct Scripted(Arc<Script>);

#[async_trait]
impl Answerer for Scripted {
    type Route = ();

    fn route(&self, _place: Place) -> anyhow::Result<()> {
        Ok(())
    }

    async fn answer(
        &self,
        _route: &(),
        question: &str,
        history: &[Turn],
        _reranking: Reranking,
        sink: &mut dyn ReplySink,
    ) -> anyhow::Result<Outcome> {
        self.0.asked.lock().unwrap().push((question.to_string(), history.to_vec()));
        let reply = self.0.reply.lock().unwrap().clone();
        let mut text = String::new();
        for piece in &reply.pieces {
            text.push_str(piece);
            sink.update(&text).await?;
        }
        if let Some(fails) = reply.fails {
            return Err(fails());
        }
        sink.finish(&text, &reply.sources).await?;
        Ok(reply.outcome(text))
    }

    async fn chunks(&self, _route: &()) -> anyhow::Result<usize> {
        Ok(1)
    }
}

/// A generator run here: a token per word, its id the word's length, a vocabulary of 100.
struct WordTokens;

#[async_trait]
impl LocalModel for WordTokens {
    fn tokens(&self, prompt: &PromptText) -> Vec<i32> {
        prompt.text().split_whitespace().map(|w| w.len() as i32).collect()
    }

    fn prompt_from_token_ids(&self, ids: &[i64]) -> Result<PromptText, String> {
        let mut prompt = PromptText::default();
        for &id in ids {
            if !(0..100).contains(&id) {
                return Err(format!("token id {id} is not in the model's vocabulary of 100"));
            }
            prompt.push_text(format!("w{id} "));
        }
        Ok(prompt)
    }

    async fn prompt_logprobs(&self, text: &str) -> Result<Vec<(String, Option<f64>)>, GenerateError> {
        Ok(text.split_inclusive(' ').enumerate().map(|(i, w)| (w.to_string(), (i > 0).then_some(-0.5))).collect())
    }

    fn kv_cells(&self) -> (usize, usize) {
        (1024, 12)
    }
}

/// Bot `docs`'s passage about bees; passage `0bad` cannot be read.
struct Stored;

#[async_trait]
impl Sources for Stored {
    async fn passage(&self, bot: &str, id: &str) -> anyhow::Result<Option<Passage>> {
        if id == "0bad" {
            anyhow::bail!("the knowledge base cannot be read");
        }
        let chunk = passage();
        Ok((bot == "docs" && id == chunk.id).then(|| Passage { source: chunk.source.clone(), chunk }))
    }
}

/// Readiness as a test sets it: rows per knowledge base and the generator's servers.
struct Status {
    rows: std::sync::Mutex<BTreeMap<String, Rows>>,
    engines: std::sync::Mutex<Option<Vec<EndpointState>>>,
}

impl Default for Status {
    fn default() -> Self {
        let rows = BTreeMap::from([("bees".to_string(), Ok(1)), ("wasps".to_string(), Ok(2))]);
        Self { rows: std::sync::Mutex::new(rows), engines: Default::default() }
    }
}

#[async_trait]
impl Health for Status {
    fn knowledge_bases(&self) -> Vec<(String, String)> {
        vec![("docs".into(), "bees".into()), ("guide".into(), "wasps".into())]
    }

    async fn rows(&self) -> BTreeMap<String, Rows> {
        self.rows.lock().unwrap().clone()
    }

    fn engines(&self) -> Option<Vec<EndpointState>> {
        self.engines.lock().unwrap().clone()
    }
}

/// The hashing embedder, counting its calls; while `closed`, each call waits for a permit
/// of `gate`.
struct Gated {
    inner: HashEmbedder,
    calls: AtomicUsize,
    closed: std::sync::atomic::AtomicBool,
    gate: tokio::sync::Semaphore,
}

impl Gated {
    fn new(dim: usize) -> Self {
        let inner = HashEmbedder { dim };
        Self { inner, calls: AtomicUsize::new(0), closed: Default::default(), gate: tokio::sync::Semaphore::new(0) }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
        self.gate.add_permits(1000);
    }
}

#[async_trait]
impl Embedder for Gated {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn count_tokens(&self, text: &str) -> usize {
        self.inner.count_tokens(text)
    }
    fn max_tokens(&self) -> usize {
        self.inner.max_tokens()
    }
    async fn embed(&self, texts: &[String]) -> anyhow::Result<Vec<Vec<f32>>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            self.gate.acquire().await?.forget();
        }
        self.inner.embed(texts).await
    }
}

/// How a test's server differs from the plain one.
#[derive(Default)]
struct Setup {
    /// Appended to the config: indented two spaces, keys of `server:`; else top-level keys.
    extra: &'static str,
    /// API keys and the bots each may use (none: every model).
    keys: Vec<(&'static str, Vec<&'static str>)>,
    /// Numbers per embedding; 0: the hashing embedder's own.
    dim: usize,
    /// The generator runs here: token ids, `echo`, KV cells.
    local: bool,
    /// The generator has no chat template.
    no_chat_template: bool,
    /// Answers and votes are kept (in a folder of the test's own).
    feedback: bool,
}

/// A server on stand-ins: bots `docs` (about bees, citing [`passage`]) and `guide`.
struct Test {
    server: Shared,
    script: Arc<Script>,
    embedder: Arc<Gated>,
    status: Arc<Status>,
    max_body_bytes: usize,
    /// Where answers and votes are kept, with [`Setup::feedback`].
    feedback: Option<(Arc<crate::question::feedback::Feedback>, tempfile::TempDir)>,
}

impl Test {
    /// With `extra` appended to the config (see [`Setup::extra`]) and keys for every model.
    async fn start(extra: &'static str, keys: &[&'static str]) -> Self {
        Self::with(Setup { extra, keys: keys.iter().map(|k| (*k, Vec::new())).collect(), ..Setup::default() }).await
    }

    async fn with(setup: Setup) -> Self {
        // What went wrong shows under a failing test.
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        // Recording starts with the daemon.
        crate::metrics::handle();
        let config = Config::parse(Path::new("lore.yaml"), &format!("{CONFIG}{}", setup.extra)).unwrap();
        let script = Arc::new(Script::default());
        let mut router = Router::new(&config, Scripted(script.clone()), None).unwrap();
        let mut feedback = None;
        if setup.feedback {
            let dir = tempfile::tempdir().unwrap();
            let store = lore_knowledge::KbStore::open(dir.path()).await.unwrap();
            let kept = crate::question::feedback::Feedback::open(
                &store,
                &dir.path().join("salt"),
                Duration::from_secs(86_400),
            );
            let kept = Arc::new(kept.unwrap());
            router = router.with_feedback(kept.clone());
            feedback = Some((kept, dir));
        }
        let router = Arc::new(router);
        let dim = if setup.dim == 0 { HashEmbedder::default().dim } else { setup.dim };
        let embedder = Arc::new(Gated::new(dim));
        let status = Arc::new(Status::default());
        let g = &config.models.generator;
        let model = EchoModel { chat_template: !setup.no_chat_template, ..EchoModel::new(512, "Bees dance [1].") };
        let api = ApiState {
            bots: router,
            generator: GeneratorModel {
                name: g.name(),
                model: Arc::new(model),
                local: setup.local.then(|| Arc::new(WordTokens) as Arc<dyn LocalModel>),
                max_answer_tokens: g.max_answer_tokens(),
                context_tokens: g.context_tokens(),
                sampling: g.sampling().clone(),
            },
            embedder: EmbedderModel { name: config.models.embedder.name(), embedder: embedder.clone() },
            keys: setup.keys.iter().map(|(value, bots)| key(value, bots)).collect(),
            sources: Arc::new(Stored),
            health: status.clone(),
            adapters: AdapterStates::default(),
            feedback: feedback.as_ref().map(|(kept, _)| kept.clone()),
        };
        let cfg = config.server.clone().unwrap();
        let server = Arc::new(Server::new(&cfg, cfg.listen, api));
        Self { server, script, embedder, status, max_body_bytes: cfg.max_body_bytes, feedback }
    }

    fn routes(&self) -> axum::Router {
        routes(self.server.clone(), self.max_body_bytes)
    }

    /// Sends `request` through the router; the status and the body (JSON, else a string).
    async fn call(&self, request: HttpRequest<Body>) -> (StatusCode, Value) {
        call(self.routes(), request).await
    }

    /// Sends `request` and checks that it is refused with `status` and OpenAI's error `code`
    /// (of type `invalid_request_error`); its path and the error's message.
    async fn refused(&self, request: HttpRequest<Body>, status: StatusCode, code: &str) -> (String, String) {
        let path = request.uri().to_string();
        let (got, body) = self.call(request).await;
        assert_eq!(got, status, "{path}: {body}");
        let error = &body["error"];
        let kind = (error["type"].as_str(), error["code"].as_str());
        assert_eq!(kind, (Some("invalid_request_error"), Some(code)), "{path}: {body}");
        (path, error["message"].as_str().unwrap().to_string())
    }

    /// Sends `request` and checks that it is refused with a 429 in OpenAI's shape; its
    /// `Retry-After` and the error's message.
    async fn overloaded(&self, request: HttpRequest<Body>) -> (String, String) {
        let (status, headers, body) = self.respond(request).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        let message = body["error"]["message"].as_str().unwrap().to_string();
        assert_eq!(body, error(&message, "rate_limit_error", "rate_limit_exceeded"));
        (headers[header::RETRY_AFTER].to_str().unwrap().to_string(), message)
    }

    /// The response to `request`, its body read whole: status, headers, body.
    async fn respond(&self, request: HttpRequest<Body>) -> (StatusCode, HeaderMap, String) {
        let response = self.routes().oneshot(request).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, headers, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A streamed response's events (each `data:`, as JSON or a string), checked to be a
    /// `200` server-sent event stream.
    async fn events(&self, request: HttpRequest<Body>) -> Vec<Value> {
        let (status, headers, body) = self.respond(request).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
        let data = body.split("\n\n").filter_map(|event| event.strip_prefix("data: "));
        data.map(|d| serde_json::from_str(d).unwrap_or_else(|_| Value::String(d.into()))).collect()
    }

    fn line(&self) -> crate::question::line::Line {
        self.server.api.bots.line().clone()
    }

    /// Takes the line's only place until the returned turn is dropped.
    async fn occupy_the_line(&self) -> crate::question::line::Slot {
        self.line().join("someone else").unwrap().turn(|_| {}).await
    }

    /// Sends `request` in the background: its status, once answered.
    fn send_later(&self, request: HttpRequest<Body>) -> tokio::task::JoinHandle<StatusCode> {
        let routes = self.routes();
        tokio::spawn(async move { routes.oneshot(request).await.unwrap().status() })
    }

    /// Takes the line's only place, then sends the chat completion `body` to `addr` and
    /// waits until it waits in line; the place and the connection.
    async fn ask_while_the_line_is_busy(
        &self,
        addr: std::net::SocketAddr,
        body: &Value,
    ) -> (crate::question::line::Slot, TcpStream) {
        let turn = self.occupy_the_line().await;
        let waiting = send(addr, "POST", "/v1/chat/completions", &body.to_string()).await;
        let line = self.line();
        eventually("the question waits", || line.waiting() == 1).await;
        (turn, waiting)
    }

    /// Serves on a free loopback port until the token fires; the address.
    async fn listen(&self, limits: connections::Limits) -> (std::net::SocketAddr, CancellationToken) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let open = self.server.connections.clone();
        tokio::spawn(connections::accept_loop(listener, self.routes(), limits, open, stop.clone()));
        (addr, stop)
    }
}

fn key(value: &str, bots: &[&str]) -> Key {
    Key { value: value.to_string(), bots: bots.iter().map(|b| b.to_string()).collect() }
}

/// Sends `request` through `routes`; the status and the body (JSON, else a string).
pub(super) async fn call(routes: axum::Router, request: HttpRequest<Body>) -> (StatusCode, Value) {
    let response = routes.oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, body)
}

/// A GET of `path` addressed to `host`.
fn get_as(path: &str, host: &str) -> axum::http::request::Builder {
    HttpRequest::get(path).header(header::HOST, host)
}

pub(super) fn get(path: &str) -> axum::http::request::Builder {
    get_as(path, HOST)
}

pub(super) fn post(path: &str, body: &Value) -> HttpRequest<Body> {
    post_raw(path, Some("application/json"), body.to_string())
}

fn post_raw(path: &str, content_type: Option<&str>, body: String) -> HttpRequest<Body> {
    let request = HttpRequest::post(path).header(header::HOST, HOST);
    let request = match content_type {
        Some(kind) => request.header(header::CONTENT_TYPE, kind),
        None => request,
    };
    request.body(Body::from(body)).unwrap()
}

/// `request` with `authorization` as it is.
fn authorized(mut request: HttpRequest<Body>, authorization: &str) -> HttpRequest<Body> {
    request.headers_mut().insert(header::AUTHORIZATION, authorization.parse().unwrap());
    request
}

/// `request` with `key` as its bearer token.
fn with_key(request: HttpRequest<Body>, key: &str) -> HttpRequest<Body> {
    authorized(request, &format!("Bearer {key}"))
}

/// A question to `model`.
fn question_to(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

pub(super) fn question(text: &str) -> Value {
    question_to("docs", text)
}

/// `body` asking for a stream.
fn streamed(mut body: Value) -> Value {
    body["stream"] = Value::Bool(true);
    body
}

/// OpenAI's error body.
fn error(message: &str, kind: &str, code: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// Polls `done` every 10 ms for up to 10 s; panics naming `what` then.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// One request to each API route, all valid for a key that may use every model.
fn one_of_each() -> Vec<HttpRequest<Body>> {
    vec![
        get("/v1/models").body(Body::empty()).unwrap(),
        post("/v1/chat/completions", &question("Why?")),
        post("/v1/completions", &json!({"model": GENERATOR, "prompt": "Once"})),
        post("/v1/embeddings", &json!({"model": EMBEDDER, "input": "bees"})),
        post("/tokenize", &json!({"prompt": "bees dance"})),
        get(&format!("/v1/sources/{}?model=docs", passage().id)).body(Body::empty()).unwrap(),
    ]
}

#[tokio::test]
async fn without_a_key_or_with_a_wrong_one_every_api_route_is_a_401_and_the_right_key_opens_them() {
    let t = Test::start("", &["secret", "other"]).await;
    let refused = error("missing or wrong API key", "authentication_error", "invalid_api_key");
    let wrong = ["Bearer wrong", "Bearer secre", "Bearer secret2", "Basic c2VjcmV0", "secret", "Bearer "];
    for request in one_of_each() {
        let path = request.uri().to_string();
        let (status, body) = t.call(request).await;
        assert_eq!((status, &body), (StatusCode::UNAUTHORIZED, &refused), "{path} without a key");
    }
    for authorization in wrong {
        for request in one_of_each() {
            let path = request.uri().to_string();
            let (status, body) = t.call(authorized(request, authorization)).await;
            assert_eq!((status, &body), (StatusCode::UNAUTHORIZED, &refused), "{path} with {authorization:?}");
        }
    }
    assert!(t.script.asked().is_empty() && t.embedder.calls() == 0, "nothing was done for them");
    for key in ["Bearer secret", "Bearer other", "Bearer  secret "] {
        for request in one_of_each() {
            let path = request.uri().to_string();
            let (status, body) = t.call(authorized(request, key)).await;
            assert_eq!(status, StatusCode::OK, "{path} with {key:?}: {body}");
        }
    }
    let probe = get("/health").body(Body::empty()).unwrap();
    assert_eq!(t.call(probe).await, (StatusCode::OK, Value::String("ok".into())), "a liveness probe needs no key");
}

#[tokio::test]
async fn a_key_limited_to_one_bot_sees_and_uses_that_bot_only_and_the_rest_is_a_404() {
    let keys = vec![("all", vec![]), ("docs-only", vec!["docs"])];
    let t = Test::with(Setup { keys, ..Setup::default() }).await;
    let models = |key| with_key(get("/v1/models").body(Body::empty()).unwrap(), key);
    let listed = |body: Value| body["data"].as_array().unwrap().iter().map(|m| m["id"].clone()).collect::<Vec<_>>();
    assert_eq!(listed(t.call(models("all")).await.1), [json!("docs"), json!("guide"), json!("gen"), json!("emb")]);
    assert_eq!(listed(t.call(models("docs-only")).await.1), [json!("docs")]);
    let hidden = [
        ("guide", post("/v1/chat/completions", &question_to("guide", "Why?"))),
        (GENERATOR, post("/v1/chat/completions", &question_to(GENERATOR, "Why?"))),
        (GENERATOR, post("/v1/completions", &json!({"model": GENERATOR, "prompt": "Once"}))),
        (EMBEDDER, post("/v1/embeddings", &json!({"model": EMBEDDER, "input": "bees"}))),
        (GENERATOR, post("/tokenize", &json!({"prompt": "bees"}))),
        ("guide", get(&format!("/v1/sources/{}?model=guide", passage().id)).body(Body::empty()).unwrap()),
    ];
    for (model, request) in hidden {
        let path = request.uri().to_string();
        let (status, body) = t.call(with_key(request, "docs-only")).await;
        let message = format!("The model `{model}` does not exist or you do not have access to it.");
        let expected = error(&message, "invalid_request_error", "model_not_found");
        assert_eq!((status, body), (StatusCode::NOT_FOUND, expected), "{path}");
    }
    assert!(t.script.asked().is_empty() && t.embedder.calls() == 0, "nothing was done for them");
    let (status, body) = t.call(with_key(post("/v1/chat/completions", &question("Why?")), "docs-only")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let source = format!("/v1/sources/{}?model=docs", passage().id);
    assert_eq!(t.call(with_key(get(&source).body(Body::empty()).unwrap(), "docs-only")).await.0, StatusCode::OK);
    assert_eq!(t.line().waiting() + t.line().answering(), 0, "no place in line was kept");
}

#[tokio::test]
async fn an_unknown_model_is_a_404_in_openai_shape_on_every_route() {
    let t = Test::start("", &[]).await;
    let requests = [
        post("/v1/chat/completions", &question_to("nope", "Why?")),
        post("/v1/completions", &json!({"model": "nope", "prompt": "Once"})),
        post("/v1/embeddings", &json!({"model": "nope", "input": "bees"})),
        post("/v1/embeddings", &json!({"model": GENERATOR, "input": "bees"})),
        post("/tokenize", &json!({"model": "nope", "prompt": "bees"})),
        post("/tokenize", &json!({"model": EMBEDDER, "prompt": "bees"})),
        post("/v1/completions", &json!({"model": "docs", "prompt": "Once"})),
        get("/v1/sources/00ff?model=nope").body(Body::empty()).unwrap(),
    ];
    for request in requests {
        let (path, message) = t.refused(request, StatusCode::NOT_FOUND, "model_not_found").await;
        assert!(message.ends_with("` does not exist or you do not have access to it."), "{path}: {message}");
    }
    let (status, body) = t.call(get("/v2/nothing").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, error("no such endpoint", "invalid_request_error", "not_found"))
    );
    assert!(t.script.asked().is_empty() && t.embedder.calls() == 0);
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_a_413_before_anything_is_done() {
    let t = Test::start("  max_body_bytes: 1024\n", &[]).await;
    let long = "bees ".repeat(400);
    let requests = [
        post("/v1/chat/completions", &question(&long)),
        post("/v1/completions", &json!({"model": GENERATOR, "prompt": long})),
        post("/v1/embeddings", &json!({"model": EMBEDDER, "input": long})),
        post("/tokenize", &json!({"prompt": long})),
        post("/v1/feedback", &json!({"id": "a1", "rating": "down", "comment": long})),
        post("/v1/gold", &json!({"id": "a1", "answer": long})),
    ];
    for request in requests {
        let (path, message) = t.refused(request, StatusCode::PAYLOAD_TOO_LARGE, "request_too_large").await;
        assert!(message.contains("length limit exceeded"), "{path}: {message}");
    }
    assert!(t.script.asked().is_empty() && t.embedder.calls() == 0);
    assert_eq!(t.call(post("/v1/chat/completions", &question("Why?"))).await.0, StatusCode::OK, "under the limit");
}

#[tokio::test]
async fn malformed_requests_are_400s_naming_what_is_wrong_before_anything_is_done() {
    let t = Test::start("", &[]).await;
    let chat = |messages: Value| json!({"model": "docs", "messages": messages});
    let completion = |fields: Value| {
        let mut body = json!({"model": GENERATOR, "prompt": "Once"});
        body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        body
    };
    let last = "messages: the last message must be the user's question";
    let no_input = "input: give one or more non-empty strings";
    let cases = [
        (post_raw("/v1/chat/completions", Some("application/json"), "{\"model\": ".into()), "EOF"),
        (post_raw("/v1/chat/completions", None, question("Why?").to_string()), "Content-Type: application/json"),
        (post("/v1/chat/completions", &json!({"model": "docs"})), "missing field `messages`"),
        (post("/v1/chat/completions", &chat(json!([]))), last),
        (post("/v1/chat/completions", &chat(json!([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]))), last),
        (post("/v1/chat/completions", &chat(json!([{"role": "user", "content": "  "}]))), "messages: the question is empty"),
        (post("/v1/chat/completions", &chat(json!([{"role": "user", "content": [{"type": "image_url"}]}]))), "the question is empty"),
        (post("/v1/completions", &completion(json!({"prompt": ""}))), "prompt: empty"),
        (post("/v1/completions", &completion(json!({"prompt": []}))), "prompt: empty"),
        (post("/v1/completions", &completion(json!({"prompt": [1, 2]}))), "prompt: token ids are read only by a model run here; send text"),
        (post("/v1/completions", &completion(json!({"echo": true}))), "echo: answered only with `logprobs` and without `stream` (it scores the prompt)"),
        (post("/v1/completions", &completion(json!({"echo": true, "logprobs": 0, "stream": true}))), "without `stream`"),
        (post("/v1/completions", &completion(json!({"echo": true, "logprobs": 0}))), "echo: only a model run here can score a prompt"),
        (post("/v1/embeddings", &json!({"model": EMBEDDER, "input": []})), no_input),
        (post("/v1/embeddings", &json!({"model": EMBEDDER, "input": ["bees", ""]})), no_input),
        (post("/v1/embeddings", &json!({"model": EMBEDDER, "input": vec!["a"; 257]})), "input: at most 256 texts per request (server.max_embedding_inputs), 257 given; send them in several requests"),
        (post("/tokenize", &json!({"model": GENERATOR})), "prompt: missing (or `content`)"),
        (get("/v1/sources/00ff").body(Body::empty()).unwrap(), "say whose source this is: ?model=BOT"),
    ];
    for (request, says) in cases {
        let (path, message) = t.refused(request, StatusCode::BAD_REQUEST, "invalid_request_error").await;
        assert!(message.contains(says), "{path}: {says:?} in {message}");
    }
    assert!(t.script.asked().is_empty() && t.embedder.calls() == 0, "nothing was done for them");
    assert_eq!(t.line().waiting() + t.line().answering(), 0, "no place in line was kept");
}

#[tokio::test]
async fn the_generator_without_a_chat_template_is_a_400_pointing_to_completions() {
    let t = Test::with(Setup { no_chat_template: true, ..Setup::default() }).await;
    let (status, body) = t.call(post("/v1/chat/completions", &question_to(GENERATOR, "Once?"))).await;
    let message = "the generator has no chat template: use /v1/completions with your own prompt, or a bot";
    assert_eq!(
        (status, body),
        (StatusCode::BAD_REQUEST, error(message, "invalid_request_error", "invalid_request_error"))
    );
    assert_eq!(t.line().waiting() + t.line().answering(), 0, "its place in line was given back");
}

#[tokio::test]
async fn a_full_line_is_a_429_with_retry_after_and_the_waiting_are_answered() {
    let t = Test::start("line:\n  max_waiting_questions: 2\n", &[]).await;
    let turn = t.occupy_the_line().await;
    let waiting = [
        t.send_later(post("/v1/chat/completions", &question("Why?"))),
        t.send_later(post("/v1/completions", &json!({"model": GENERATOR, "prompt": "Once"}))),
    ];
    let line = t.line();
    eventually("two requests wait", || line.waiting() == 2).await;
    for request in [
        post("/v1/chat/completions", &question("And why?")),
        post("/v1/completions", &json!({"model": GENERATOR, "prompt": "Twice"})),
    ] {
        let message = "too many questions are waiting (2 in line); please ask again in a minute";
        assert_eq!(t.overloaded(request).await, ("10".into(), message.into()));
    }
    drop(turn);
    for request in waiting {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(t.script.asked().len(), 1, "the refused question was never asked");
}

#[tokio::test]
async fn one_api_key_with_questions_waiting_gets_a_429_in_words_but_engine_work_may_wait() {
    let t = Test::start("", &[]).await;
    let turn = t.occupy_the_line().await;
    let waiting: Vec<_> = (0..3).map(|_| t.send_later(post("/v1/chat/completions", &question("Why?")))).collect();
    let line = t.line();
    eventually("three questions wait", || line.waiting() == 3).await;
    let message = "you already have 3 questions waiting; I will answer those first";
    assert_eq!(t.overloaded(post("/v1/chat/completions", &question("And why?"))).await, ("10".into(), message.into()));
    // Another Lore using this one as its engine sends many at once.
    let engine = t.send_later(post("/v1/completions", &json!({"model": GENERATOR, "prompt": "Once"})));
    eventually("the engine work waits too", || line.waiting() == 4).await;
    drop(turn);
    for request in waiting.into_iter().chain([engine]) {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }
}

#[tokio::test]
async fn asking_faster_than_the_rate_limit_is_a_429_saying_when_to_come_back() {
    let t = Test::start("line:\n  rate_limit: {questions: 2, per_seconds: 600}\n", &[]).await;
    for _ in 0..2 {
        assert_eq!(t.call(post("/v1/chat/completions", &question("Why?"))).await.0, StatusCode::OK);
    }
    let (retry_after, message) = t.overloaded(post("/v1/chat/completions", &question("Why?"))).await;
    assert!(["599", "600"].contains(&retry_after.as_str()), "{retry_after}");
    let says = "you are asking faster than I can answer (at most 2 questions every 600 s); please ask again in";
    assert_eq!(message, format!("{says} {retry_after} s"));
    assert_eq!(t.script.asked().len(), 2);
}

#[tokio::test]
async fn embeddings_and_tokenize_past_the_side_work_waiting_room_are_a_429_with_retry_after() {
    let t = Test::start("", &[]).await;
    t.embedder.close();
    let embedding = || post("/v1/embeddings", &json!({"model": EMBEDDER, "input": "bees"}));
    let running: Vec<_> = (0..2).map(|_| t.send_later(embedding())).collect();
    let embedder = t.embedder.clone();
    eventually("two embed", || embedder.calls() == 2).await;
    let waiting: Vec<_> = (0..8).map(|_| t.send_later(post("/tokenize", &json!({"prompt": "bees"})))).collect();
    let side = t.server.clone();
    eventually("eight wait", || side.side_work.taken() == 10).await;
    for request in [embedding(), post("/tokenize", &json!({"prompt": "bees"}))] {
        let message = "8 embedding or tokenize requests are already waiting; please try again in a few seconds";
        assert_eq!(t.overloaded(request).await, ("2".into(), message.into()));
    }
    t.embedder.open();
    for request in running.into_iter().chain(waiting) {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }
}

/// `chunk` without its `id` and `created` (checked here: the id starts with `prefix`).
fn settled(mut chunk: Value, prefix: &str) -> Value {
    let id = chunk.as_object_mut().unwrap().remove("id").unwrap();
    assert!(id.as_str().unwrap().starts_with(prefix), "{id}");
    assert!(chunk.as_object_mut().unwrap().remove("created").unwrap().is_u64());
    chunk
}

/// The extension fields of [`Reply::default`]'s answer: sources, trust, evidence.
fn bees_fields() -> Value {
    let id = passage().id;
    json!({
        "sources": [{"number": 1, "source": "bees.md", "location": "line 1", "id": id, "url": format!("/v1/sources/{id}?model=docs")}],
        "abstained": false,
        "confidence": 0.75,
        "evidence": {"sentence": "Bees dance.", "passage": 1, "location": "line 1", "source_id": id},
    })
}

/// `fields` merged into `object`.
fn merged(mut object: Value, fields: Value) -> Value {
    object.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
    object
}

#[tokio::test]
async fn a_streamed_answer_is_a_role_then_deltas_then_its_sources_and_trust_then_done() {
    let t = Test::start("", &[]).await;
    let events = t.events(post("/v1/chat/completions", &streamed(question("Why do bees dance?")))).await;
    let ids: Vec<&Value> = events.iter().filter_map(|e| e.get("id")).collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "one id for the whole stream: {events:?}");
    let chunk = |delta: Value, finish: Value| json!({"object": "chat.completion.chunk", "model": "docs", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    let mut expected: Vec<Value> = [
        json!({"role": "assistant", "content": ""}),
        json!({"content": "Bees "}),
        json!({"content": "dance [1]."}),
        json!({"content": "\n\nSources:\n[1] bees.md (line 1)"}),
    ]
    .into_iter()
    .map(|delta| chunk(delta, Value::Null))
    .collect();
    expected.push(merged(chunk(json!({}), json!("stop")), bees_fields()));
    let (last, chunks) = events.split_last().unwrap();
    assert_eq!(last, "[DONE]");
    let chunks: Vec<Value> = chunks.iter().map(|c| settled(c.clone(), "chatcmpl-")).collect();
    assert_eq!(chunks, expected);
    assert_eq!(t.script.asked(), [("Why do bees dance?".to_string(), Vec::new())]);
}

#[tokio::test]
async fn a_whole_answer_keeps_every_piece_with_its_sources_and_trust() {
    let t = Test::start("", &[]).await;
    let (status, answer) = t.call(post("/v1/chat/completions", &question("Why do bees dance?"))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let content = "Bees dance [1].\n\nSources:\n[1] bees.md (line 1)";
    let message = json!({"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"});
    let expected = json!({"object": "chat.completion", "model": "docs", "choices": [message]});
    assert_eq!(settled(answer, "chatcmpl-"), merged(expected, bees_fields()));
    // Cut at its length: the finish reason says so.
    t.script.set(Reply { stop: Some(StopReason::Length), ..Reply::default() });
    let (_, cut) = t.call(post("/v1/chat/completions", &question("Why?"))).await;
    assert_eq!(cut["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn an_abstention_is_answered_and_says_so_whole_or_streamed() {
    let t = Test::start("", &[]).await;
    t.script.set(Reply::abstention());
    let fields = json!({"sources": [], "abstained": true, "confidence": null, "evidence": null});
    // One piece only: the abstention's text (a whole answer once lost its second piece).
    let (status, answer) = t.call(post("/v1/chat/completions", &question("Who?"))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let message =
        json!({"index": 0, "message": {"role": "assistant", "content": "I don't know."}, "finish_reason": "stop"});
    assert_eq!(
        settled(answer, "chatcmpl-"),
        merged(json!({"object": "chat.completion", "model": "docs", "choices": [message]}), fields.clone())
    );
    let events = t.events(post("/v1/chat/completions", &streamed(question("Who?")))).await;
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(events[1]["choices"][0]["delta"], json!({"content": "I don't know."}));
    let last = settled(events[2].clone(), "chatcmpl-");
    let chunk = json!({"object": "chat.completion.chunk", "model": "docs", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    assert_eq!(last, merged(chunk, fields));
    assert_eq!(events[3], "[DONE]");
}

#[tokio::test]
async fn the_generator_by_its_name_answers_in_its_template_without_a_bot_s_fields() {
    let t = Test::start("", &[]).await;
    let (status, answer) = t.call(post("/v1/chat/completions", &question_to(GENERATOR, "Once?"))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let message =
        json!({"index": 0, "message": {"role": "assistant", "content": "Bees dance [1]."}, "finish_reason": "stop"});
    let mut answer = settled(answer, "chatcmpl-");
    // OpenAI's usage: the template's prompt (the stand-in counts words) and three pieces.
    let usage = answer.as_object_mut().unwrap().remove("usage").expect("usage");
    assert_eq!(
        (usage["completion_tokens"].as_u64(), usage["prompt_tokens"].as_u64().is_some_and(|n| n > 0)),
        (Some(3), true),
        "{usage}"
    );
    assert_eq!(usage["total_tokens"].as_u64(), Some(usage["prompt_tokens"].as_u64().unwrap() + 3), "{usage}");
    let expected = json!({"object": "chat.completion", "model": GENERATOR, "choices": [message], "sources": []});
    assert_eq!(answer, expected);
    let mut body = streamed(question_to(GENERATOR, "Once?"));
    body["max_tokens"] = json!(2);
    let events = t.events(post("/v1/chat/completions", &body)).await;
    let deltas: Vec<&Value> = events.iter().map(|e| &e["choices"][0]["delta"]).collect();
    assert_eq!(
        deltas[..3],
        [&json!({"role": "assistant", "content": ""}), &json!({"content": "Bees "}), &json!({"content": "dance "})]
    );
    let last = settled(events[3].clone(), "chatcmpl-");
    let chunk = json!({"object": "chat.completion.chunk", "model": GENERATOR, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}], "sources": []});
    assert_eq!((last, &events[4], events.len()), (chunk, &json!("[DONE]"), 5));
    assert!(t.script.asked().is_empty(), "no bot was asked");
}

#[tokio::test]
async fn completions_are_text_whole_or_streamed_without_an_opening_chunk() {
    let t = Test::start("", &[]).await;
    let (status, whole) = t.call(post("/v1/completions", &json!({"model": GENERATOR, "prompt": "Once"}))).await;
    assert_eq!(status, StatusCode::OK, "{whole}");
    let choice = json!({"index": 0, "text": "Bees dance [1].", "finish_reason": "stop"});
    let usage = json!({"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4});
    assert_eq!(
        settled(whole, "cmpl-"),
        json!({"object": "text_completion", "model": GENERATOR, "choices": [choice], "sources": [], "usage": usage})
    );
    let body = json!({"model": GENERATOR, "prompt": "Once", "stream": true, "max_tokens": 2, "stop": "never"});
    let events = t.events(post("/v1/completions", &body)).await;
    let chunks: Vec<Value> = events[..3].iter().map(|c| settled(c.clone(), "cmpl-")).collect();
    let chunk = |text: &str, finish: Value| json!({"object": "text_completion", "model": GENERATOR, "choices": [{"index": 0, "text": text, "finish_reason": finish}]});
    let last = merged(chunk("", json!("length")), json!({"sources": []}));
    assert_eq!(chunks, [chunk("Bees ", Value::Null), chunk("dance ", Value::Null), last]);
    assert_eq!((&events[3], events.len()), (&json!("[DONE]"), 4));
}

#[tokio::test]
async fn token_ids_and_echo_are_read_by_a_generator_run_here() {
    let t = Test::with(Setup { local: true, ..Setup::default() }).await;
    let (status, ids) = t.call(post("/v1/completions", &json!({"model": GENERATOR, "prompt": [3, 5]}))).await;
    assert_eq!((status, ids["choices"][0]["text"].as_str()), (StatusCode::OK, Some("Bees dance [1].")), "{ids}");
    let (status, body) = t.call(post("/v1/completions", &json!({"model": GENERATOR, "prompt": [3, 500]}))).await;
    let message = "prompt: token id 500 is not in the model's vocabulary of 100";
    assert_eq!(
        (status, body),
        (StatusCode::BAD_REQUEST, error(message, "invalid_request_error", "invalid_request_error"))
    );
    let echo = json!({"model": GENERATOR, "prompt": "Bees dance well", "echo": true, "logprobs": 0, "max_tokens": 0});
    let (status, scored) = t.call(post("/v1/completions", &echo)).await;
    assert_eq!(status, StatusCode::OK, "{scored}");
    let logprobs = json!({"tokens": ["Bees ", "dance ", "well"], "token_logprobs": [null, -0.5, -0.5], "text_offset": [0, 5, 11], "top_logprobs": null});
    let choice = json!({"index": 0, "text": "Bees dance well", "logprobs": logprobs, "finish_reason": "length"});
    let usage = json!({"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3});
    assert_eq!(
        settled(scored, "cmpl-"),
        json!({"object": "text_completion", "model": GENERATOR, "choices": [choice], "usage": usage})
    );
    let tokens = json!({"model": GENERATOR, "prompt": [3]});
    let (status, body) = t.call(post("/v1/completions", &merged(tokens, json!({"echo": true, "logprobs": 1})))).await;
    assert_eq!(
        (status, body["error"]["message"].as_str()),
        (StatusCode::BAD_REQUEST, Some("echo: the prompt to score must be text"))
    );
}

#[tokio::test]
async fn tokenize_counts_with_the_generator_and_lists_ids_only_when_it_runs_here() {
    let t = Test::start("", &[]).await;
    let (status, body) = t.call(post("/tokenize", &json!({"prompt": "bees dance well"}))).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"count": 3, "tokens": [], "max_model_len": 512})));
    let here = Test::with(Setup { local: true, ..Setup::default() }).await;
    let (status, body) = here.call(post("/tokenize", &json!({"model": GENERATOR, "content": "bees dance well"}))).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"count": 3, "tokens": [4, 5, 4], "max_model_len": 512})));
}

#[tokio::test]
async fn embeddings_come_back_in_order_with_their_token_count() {
    let t = Test::start("", &[]).await;
    let (status, body) =
        t.call(post("/v1/embeddings", &json!({"model": EMBEDDER, "input": ["bees dance", "wasps"]}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut data = body["data"].as_array().unwrap().clone();
    for (index, (item, text)) in data.iter_mut().zip(["bees dance", "wasps"]).enumerate() {
        let numbers: Vec<f32> = serde_json::from_value(item["embedding"].take()).unwrap();
        assert_eq!(numbers, t.embedder.inner.vector(text), "{text}");
        assert_eq!(*item, json!({"object": "embedding", "index": index, "embedding": null}));
    }
    let usage = json!({"prompt_tokens": 3, "total_tokens": 3});
    assert_eq!((&body["object"], &body["model"], &body["usage"]), (&json!("list"), &json!(EMBEDDER), &usage));
    let (_, one) = t.call(post("/v1/embeddings", &json!({"model": EMBEDDER, "input": "bees"}))).await;
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_embeddings_request_of_250k_inputs_is_refused_at_once_and_one_at_the_cap_is_answered() {
    let t = Test::start("", &[]).await;
    let flood = json!({"model": EMBEDDER, "input": vec!["a"; 250_000]});
    let (status, body) = t.call(post("/v1/embeddings", &flood)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("at most 256") && message.contains("250000 given"), "{message}");
    assert_eq!(t.embedder.calls(), 0, "nothing was embedded");
    let at_the_cap = json!({"model": EMBEDDER, "input": vec!["bees dance"; 256]});
    let (status, body) = t.call(post("/v1/embeddings", &at_the_cap)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 256);
    assert_eq!(body["usage"]["prompt_tokens"], 512);
    assert_eq!(t.embedder.calls(), 256 / openai::EMBED_GROUP, "embedded in groups");
}

#[tokio::test]
async fn a_failure_before_any_text_is_an_http_error_and_after_text_ends_the_stream_with_it() {
    let t = Test::start("", &[]).await;
    let failures: [(Failure, StatusCode, Option<&str>, Value); 3] = [
        (
            || crate::question::router::Restarting.into(),
            StatusCode::SERVICE_UNAVAILABLE,
            Some("60"),
            error(crate::question::router::RESTARTING, "service_unavailable", "restarting"),
        ),
        (
            || GenerateError::QueueFull(4).into(),
            StatusCode::TOO_MANY_REQUESTS,
            Some("5"),
            error(&GenerateError::QueueFull(4).to_string(), "rate_limit_error", "rate_limit_exceeded"),
        ),
        (
            || anyhow::anyhow!("the disk is on fire"),
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            error("answering failed; the server log has the cause (error ID)", "server_error", "server_error"),
        ),
    ];
    for (fails, status, retry_after, body) in failures {
        t.script.set(Reply { pieces: Vec::new(), fails: Some(fails), ..Reply::default() });
        let (got, headers, text) = t.respond(post("/v1/chat/completions", &question("Why?"))).await;
        assert_eq!((got, id_masked(serde_json::from_str::<Value>(&text).unwrap())), (status, body.clone()));
        assert_eq!(headers.get(header::RETRY_AFTER).map(|v| v.to_str().unwrap()), retry_after);
        t.script.set(Reply { fails: Some(fails), ..Reply::default() });
        let events = t.events(post("/v1/chat/completions", &streamed(question("Why?")))).await;
        let contents: Vec<&Value> = events[1..3].iter().map(|e| &e["choices"][0]["delta"]["content"]).collect();
        assert_eq!(contents, [&json!("Bees "), &json!("dance [1].")]);
        assert_eq!(
            events[3..].iter().cloned().map(id_masked).collect::<Vec<_>>(),
            [body],
            "the error ends the stream, no [DONE]"
        );
    }
}

/// `v` with the question id an error names ("(error 0b86f6)", random) read as "ID".
fn id_masked(mut v: Value) -> Value {
    let Some(message) = v["error"]["message"].as_str() else { return v };
    if let Some((before, id)) = message.strip_suffix(')').and_then(|m| m.rsplit_once(" (error ")) {
        assert!(id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()), "an error id of twelve hex digits: {id}");
        v["error"]["message"] = Value::from(format!("{before} (error ID)"));
    }
    v
}

#[tokio::test]
async fn a_question_longer_than_the_context_is_a_400_before_the_line_and_retrieval() {
    let t = Test::start("", &[]).await;
    let (status, body) = t.call(post("/v1/chat/completions", &question(&"why ".repeat(500)))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = "messages: the question is too long: 500 tokens";
    assert!(body["error"]["message"].as_str().unwrap().starts_with(message), "{body}");
    assert!(t.script.asked().is_empty(), "nothing was retrieved");
    assert_eq!(t.line().waiting() + t.line().answering(), 0);
    // The generator on its own is refused by the model, before any text.
    let (status, body) = t.call(post("/v1/chat/completions", &question_to(GENERATOR, &"why ".repeat(600)))).await;
    let message = "the prompt has 603 tokens but the context holds 512";
    assert_eq!(
        (status, body),
        (StatusCode::BAD_REQUEST, error(message, "invalid_request_error", "invalid_request_error"))
    );
}

#[tokio::test]
async fn a_history_of_seventeen_thousand_turns_reaches_the_bot_cut_to_its_memory_turns() {
    let t = Test::start("  max_body_bytes: 4000000\n", &[]).await;
    let mut messages: Vec<Value> = (0..17_000)
        .flat_map(|i| {
            [
                json!({"role": "user", "content": format!("question {i}")}),
                json!({"role": "system", "content": "be brief"}),
                json!({"role": "assistant", "content": format!("answer {i}")}),
            ]
        })
        .collect();
    messages.push(json!({"role": "user", "content": " Why do bees dance? "}));
    let (status, answer) = t.call(post("/v1/chat/completions", &json!({"model": "docs", "messages": messages}))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let turn = |i: usize| Turn { question: format!("question {i}"), answer: format!("answer {i}") };
    assert_eq!(t.script.asked(), [("Why do bees dance?".to_string(), vec![turn(16_998), turn(16_999)])]);
}

#[tokio::test]
async fn a_vote_on_a_bot_s_answer_is_kept_once_per_key_and_any_other_id_is_a_404() {
    let keys = vec![("k-all", vec![]), ("k-guide", vec!["guide"])];
    let t = Test::with(Setup { keys, feedback: true, ..Setup::default() }).await;
    let feedback = t.feedback.as_ref().unwrap().0.clone();
    let (status, body) = t.call(with_key(post("/v1/chat/completions", &question("Why?")), "k-all")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let answer_id = id.strip_prefix("chatcmpl-").expect("a chat completion's id").to_string();
    let mut kept = None;
    for _ in 0..200 {
        kept = feedback.answer(&answer_id).await.unwrap();
        if kept.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kept = kept.expect("the answer is kept under its response's id");
    assert_eq!((kept.bot.as_str(), kept.platform.as_str(), kept.question.as_str()), ("docs", "api", "Why?"));

    let vote = |body: Value, key: &str| with_key(post("/v1/feedback", &body), key);
    let (status, body) = t.call(vote(json!({"id": id, "rating": "down", "comment": "too vague"}), "k-all")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"object": "lore.feedback", "id": id, "bot": "docs", "rating": "down", "comment": "too vague"})
    );
    let (status, body) = t.call(vote(json!({"id": answer_id, "rating": "up"}), "k-all")).await;
    assert_eq!((status, &body["rating"]), (StatusCode::OK, &json!("up")), "the bare id works too: {body}");
    let votes = feedback.votes(None, None).await.unwrap();
    assert_eq!(votes.len(), 1, "a second vote of one key replaces its first");
    assert_eq!(votes[0].answer.as_ref().unwrap().answer, kept.answer, "a vote keeps the answer it is about");

    let (_, message) =
        t.refused(vote(json!({"id": id, "rating": "up"}), "k-guide"), StatusCode::NOT_FOUND, "not_found").await;
    assert!(message.contains(&id), "a key of another bot sees no such answer: {message}");
    t.refused(
        vote(json!({"id": "chatcmpl-0000aaaabbbb", "rating": "up"}), "k-all"),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    t.refused(vote(json!({"id": "../../etc", "rating": "up"}), "k-all"), StatusCode::NOT_FOUND, "not_found").await;
    let (_, message) = t
        .refused(vote(json!({"id": id, "rating": "meh"}), "k-all"), StatusCode::BAD_REQUEST, "invalid_request_error")
        .await;
    assert!(message.contains("\"up\" or \"down\""), "{message}");
    let long = "x".repeat(crate::question::feedback::MAX_COMMENT_CHARS + 1);
    let (_, message) = t
        .refused(
            vote(json!({"id": id, "rating": "down", "comment": long}), "k-all"),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
        )
        .await;
    assert!(message.starts_with("comment:"), "{message}");
    let (status, _) = t.call(post("/v1/feedback", &json!({"id": id, "rating": "up"}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(feedback.votes(None, None).await.unwrap().len(), 1, "nothing refused was kept");
}

#[tokio::test]
async fn the_quality_figures_count_a_voted_down_answer_and_a_correction_takes_it_off_the_review_queue() {
    let keys = vec![("k-all", vec![]), ("k-guide", vec!["guide"])];
    let t = Test::with(Setup { keys, feedback: true, ..Setup::default() }).await;
    let feedback = t.feedback.as_ref().unwrap().0.clone();
    let (_, body) = t.call(with_key(post("/v1/chat/completions", &question("Where can I park?")), "k-all")).await;
    let id = body["id"].as_str().unwrap().to_string();
    let answer_id = id.trim_start_matches("chatcmpl-").to_string();
    for _ in 0..200 {
        if feedback.answer(&answer_id).await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let vote = json!({"id": id, "rating": "down", "comment": "it never said where"});
    assert_eq!(t.call(with_key(post("/v1/feedback", &vote), "k-all")).await.0, StatusCode::OK);

    let quality = |key: &'static str, days: &str| {
        with_key(get(&format!("/v1/quality?days={days}")).body(Body::empty()).unwrap(), key)
    };
    let (status, report) = t.call(quality("k-all", "7")).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["days"].as_array().unwrap().len(), 7);
    let place = &report["places"][0];
    assert_eq!(
        (&place["bot"], &place["platform"], &place["channel"]),
        (&json!("docs"), &json!("api"), &json!("api-key-0")),
        "the key by its name, never its value"
    );
    assert_eq!((&place["totals"]["questions"], &place["totals"]["down"]), (&json!(1), &json!(1)), "{report}");
    assert_eq!(report["gaps"][0]["examples"], json!(["Where can I park?"]), "a voted-down question is a gap");
    assert_eq!(report["review"][0]["id"], json!(answer_id));
    assert_eq!(report["review"][0]["comments"], json!(["it never said where"]));
    let (_, hidden) = t.call(quality("k-guide", "7")).await;
    assert_eq!((hidden["places"].as_array().unwrap().len(), hidden["review"].as_array().unwrap().len()), (0, 0));
    t.refused(quality("k-all", "0"), StatusCode::BAD_REQUEST, "invalid_request_error").await;
    t.refused(quality("k-all", "many"), StatusCode::BAD_REQUEST, "invalid_request_error").await;

    let gold = |body: Value, key: &str| with_key(post("/v1/gold", &body), key);
    let correction = json!({"id": answer_id, "answer": "Behind the hall", "source": "site.md"});
    t.refused(gold(correction.clone(), "k-guide"), StatusCode::NOT_FOUND, "not_found").await;
    t.refused(
        gold(json!({"id": answer_id, "answer": "  "}), "k-all"),
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
    )
    .await;
    let (status, saved) = t.call(gold(correction, "k-all")).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert_eq!(
        (&saved["question"], &saved["answer"], &saved["source"]),
        (&json!("Where can I park?"), &json!("Behind the hall"), &json!("site.md"))
    );
    let (_, report) = t.call(quality("k-all", "7")).await;
    assert_eq!(report["review"], json!([]), "a corrected answer leaves the queue");
    assert_eq!(feedback.gold(Some("docs"), None).await.unwrap()[0].answer.as_deref(), Some("Behind the hall"));

    let (status, page) = t.call(get("/quality").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.as_str().unwrap().contains("<title>Lore: quality</title>"));
}

#[tokio::test]
async fn a_cited_passage_opens_for_its_bot_in_full_and_nothing_else_does() {
    let t = Test::start("", &[]).await;
    let id = passage().id;
    let open = |path: String| get(&path).body(Body::empty()).unwrap();
    let (status, body) = t.call(open(format!("/v1/sources/{id}?model=docs"))).await;
    let expected = json!({"object": "lore.source", "id": id, "model": "docs", "source": "bees.md", "location": "line 1", "page": null, "section": null, "lines": [1, 1], "text": "Bees dance."});
    assert_eq!((status, body), (StatusCode::OK, expected));
    let (status, body) = t.call(open("/v1/sources/00ff?model=docs".into())).await;
    let message = "`docs` has no passage `00ff` (it may have been re-ingested since)";
    assert_eq!((status, body), (StatusCode::NOT_FOUND, error(message, "invalid_request_error", "not_found")));
    let (status, body) = t.call(open(format!("/v1/sources/{id}?model=guide"))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found")),
        "another bot's notes"
    );
    let (status, body) = t.call(open("/v1/sources/0bad?model=docs".into())).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            error("answering failed; the server log has the cause", "server_error", "server_error")
        )
    );
}

#[tokio::test]
async fn ready_names_what_is_not_ready_and_shows_details_to_key_holders_only() {
    let t = Test::start("", &["secret"]).await;
    let ready = |key: Option<&str>| {
        let request = get("/ready").body(Body::empty()).unwrap();
        key.map_or_else(|| request, |key| with_key(get("/ready").body(Body::empty()).unwrap(), key))
    };
    t.server.api.adapters.set("docs", "running");
    assert_eq!(t.call(ready(None)).await, (StatusCode::OK, json!({"ready": true})));
    assert_eq!(t.call(ready(Some("wrong"))).await, (StatusCode::OK, json!({"ready": true})));
    let (_, details) = t.call(ready(Some("secret"))).await;
    let kbs = json!({"bees": {"ok": true, "rows": 1}, "wasps": {"ok": true, "rows": 2}});
    let models = json!({"generator": true, "embedder": true});
    let expected = json!({"ready": true, "models": models, "engines": null, "knowledge_bases": kbs, "adapters": {"docs": "running"}});
    assert_eq!(details, expected);
    t.status.rows.lock().unwrap().insert("bees".into(), Ok(0));
    t.status.rows.lock().unwrap().insert("wasps".into(), Err("no such table".into()));
    let engine = |healthy| EndpointState { url: "http://gpu:8000/v1".into(), healthy, in_flight: 2 };
    *t.status.engines.lock().unwrap() = Some(vec![engine(false)]);
    t.server.api.adapters.set("guide", "connecting");
    assert_eq!(t.call(ready(None)).await, (StatusCode::SERVICE_UNAVAILABLE, json!({"ready": false})));
    let (status, details) = t.call(ready(Some("secret"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let kbs = json!({
        "bees": {"ok": false, "rows": 0, "error": "empty: run `lore ingest`", "bot": "docs"},
        "wasps": {"ok": false, "error": "no such table", "bot": "guide"},
    });
    let engines = json!([{"url": "http://gpu:8000/v1", "healthy": false, "in_flight": 2}]);
    let adapters = json!({"docs": "running", "guide": "connecting"});
    assert_eq!(
        details,
        json!({"ready": false, "models": models, "engines": engines, "knowledge_bases": kbs, "adapters": adapters})
    );
}

#[tokio::test]
async fn metrics_are_for_key_holders_and_read_the_line_the_rows_and_the_kv_cache() {
    let t = Test::with(Setup { keys: vec![("secret", vec![])], local: true, ..Setup::default() }).await;
    // A knowledge base of its own: the recorder is shared by the tests in this process.
    t.status.rows.lock().unwrap().insert("metrics-only".into(), Ok(7));
    let metrics = || get("/metrics").body(Body::empty()).unwrap();
    let (status, body) = t.call(metrics()).await;
    assert_eq!(
        (status, body),
        (StatusCode::UNAUTHORIZED, error("missing or wrong API key", "authentication_error", "invalid_api_key"))
    );
    let (status, headers, text) = t.respond(with_key(metrics(), "secret")).await;
    assert_eq!(
        (status, headers[header::CONTENT_TYPE].to_str().unwrap()),
        (StatusCode::OK, "text/plain; version=0.0.4")
    );
    for sample in ["lore_knowledge_base_rows{kb=\"metrics-only\"} 7", "lore_kv_cells 1024", "lore_kv_cells_in_use 12"] {
        assert!(text.contains(sample), "{sample} in {text}");
    }
}

#[tokio::test]
async fn a_page_that_rebinds_its_name_to_this_machine_is_refused_without_keys() {
    let t = Test::start("", &[]).await;
    let models = || get("/v1/models");
    let (status, body) = t.call(get_as("/v1/models", "evil.example").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("\"evil.example\"") && message.contains("server.allowed_hosts"), "{message}");
    let from_a_page = models().header(header::ORIGIN, "http://evil.example").body(Body::empty()).unwrap();
    let (status, body) = t.call(from_a_page).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("origin_not_allowed")));
    assert_eq!(t.call(models().body(Body::empty()).unwrap()).await.0, StatusCode::OK);
    let same_page = models().header(header::ORIGIN, "http://127.0.0.1:8080").body(Body::empty()).unwrap();
    assert_eq!(t.call(same_page).await.0, StatusCode::OK, "the chat page's own requests");
    let probe = get_as("/health", "10.0.0.7:8080").body(Body::empty()).unwrap();
    assert_eq!(t.call(probe).await, (StatusCode::OK, Value::String("ok".into())), "a liveness probe, any name");
    let (status, page) = t.call(get("/").body(Body::empty()).unwrap()).await;
    assert!(status == StatusCode::OK && page.as_str().unwrap().contains("<title>Lore</title>"), "the chat page");
}

/// Limits for the connection tests: small caps, short timeouts.
fn limits(max_connections: usize, max_per_ip: usize, timeouts: Duration) -> connections::Limits {
    connections::Limits { max_connections, max_per_ip, header_read_timeout: timeouts, idle_timeout: timeouts }
}

/// A connection to `addr` from the loopback address `from` (Linux routes all of
/// 127.0.0.0/8 to loopback).
async fn connect_from(from: &str, addr: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Everything the server sends until it closes the connection (or 10 s pass).
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        // A reset counts as closed.
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            seen.extend_from_slice(&buf[..n]);
        }
    });
    assert!(read.await.is_ok(), "the server kept the connection open: {}", String::from_utf8_lossy(&seen));
    String::from_utf8_lossy(&seen).into_owned()
}

/// Sends a raw HTTP/1.1 request on a new connection from 127.0.0.1 and returns the
/// connection.
async fn send(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> TcpStream {
    let mut stream = connect_from("127.0.0.1", addr).await;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_a_cap_are_answered_503_and_closed_and_the_rest_are_served() {
    let t = Test::start("", &[]).await;
    let (addr, stop) = t.listen(limits(4, 2, Duration::from_secs(30))).await;
    let mut held = vec![connect_from("127.0.0.2", addr).await, connect_from("127.0.0.2", addr).await];
    let mut third = connect_from("127.0.0.2", addr).await;
    let refused = read_to_close(&mut third).await;
    assert!(refused.starts_with("HTTP/1.1 503") && refused.contains("Retry-After: 5"), "{refused}");
    assert!(refused.contains("too many connections from your address (2 open)"), "{refused}");
    held.push(connect_from("127.0.0.3", addr).await);
    held.push(connect_from("127.0.0.3", addr).await);
    let open = t.server.connections.clone();
    eventually("four connections are open", || open.total() == 4).await;
    let mut everyone = send(addr, "GET", "/health", "").await;
    assert!(read_to_close(&mut everyone).await.contains("the server has too many connections open (4)"));
    drop(held.pop());
    eventually("a connection closed", || open.total() == 3).await;
    let mut served = send(addr, "GET", "/health", "").await;
    let mut buf = [0u8; 1024];
    let n = served.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_slow_header_and_stalled_body_connections_are_closed_by_the_timeouts() {
    let t = Test::start("", &[]).await;
    let (addr, stop) = t.listen(limits(100, 100, Duration::from_secs(1))).await;
    let mut idle = connect_from("127.0.0.2", addr).await;
    let mut slow = connect_from("127.0.0.2", addr).await;
    let trickle = tokio::spawn(async move {
        // One byte of a header every 300 ms: it never completes in time.
        for byte in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n".iter().cycle().take(100) {
            if slow.write_all(&[*byte]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        false
    });
    assert_eq!(read_to_close(&mut idle).await, "", "an idle connection is closed without a word");
    assert!(tokio::time::timeout(Duration::from_secs(10), trickle).await.unwrap().unwrap(), "the slow header was cut");
    // A kept-alive connection is closed once idle too.
    let mut kept = send(addr, "GET", "/health", "").await;
    assert!(read_to_close(&mut kept).await.starts_with("HTTP/1.1 200"));
    // A body that stops arriving.
    let mut stalled = connect_from("127.0.0.1", addr).await;
    let head = format!("POST /v1/embeddings HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\"");
    stalled.write_all(head.as_bytes()).await.unwrap();
    read_to_close(&mut stalled).await;
    let open = t.server.connections.clone();
    eventually("every connection closed", || open.total() == 0).await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_its_client_does_not_read_is_cut_after_the_idle_timeout() {
    // About 10 MB of numbers: more than the sockets' buffers hold.
    let t = Test::with(Setup { dim: 4096, ..Setup::default() }).await;
    let (addr, stop) = t.listen(limits(100, 100, Duration::from_secs(1))).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut unread = socket.connect(addr).await.unwrap();
    let input = json!({"model": EMBEDDER, "input": vec!["bees dance"; 256]});
    let body = input.to_string();
    let head = format!(
        "POST /v1/embeddings HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    unread.write_all((head + &body).as_bytes()).await.unwrap();
    let embedder = t.embedder.clone();
    eventually("the answer is being written", || embedder.calls() == 256 / openai::EMBED_GROUP).await;
    let open = t.server.connections.clone();
    eventually("the server gives the connection up", || open.total() == 0).await;
    let answered = read_to_close(&mut unread).await;
    assert!(answered.starts_with("HTTP/1.1 200") && !answered.ends_with('}'), "cut short: {} bytes", answered.len());
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_waiting_in_line_outlasts_the_timeouts() {
    let t = Test::start("", &[]).await;
    let (addr, stop) = t.listen(limits(100, 100, Duration::from_secs(1))).await;
    let (turn, mut waiting) = t.ask_while_the_line_is_busy(addr, &streamed(question("Why do bees dance?"))).await;
    let line = t.line();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(line.waiting(), 1, "still waiting after three timeouts' worth");
    drop(turn);
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("[DONE]") {
        let n = tokio::time::timeout(Duration::from_secs(10), waiting.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before the answer ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.starts_with("HTTP/1.1 200") && seen.contains("Bees"), "{seen}");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_hangs_up_leaves_the_line_and_a_half_done_embedding_stops() {
    let t = Test::start("", &[]).await;
    let (addr, stop) = t.listen(limits(100, 100, Duration::from_secs(30))).await;
    // A question waiting in line, its caller gone: the place is freed, nothing retrieved.
    let (turn, waiting) = t.ask_while_the_line_is_busy(addr, &question("Why?")).await;
    let line = t.line();
    drop(waiting);
    eventually("the place in line is freed", || line.waiting() == 0).await;
    drop(turn);
    // An embedding of four groups, its caller gone during the first: no more groups.
    t.embedder.close();
    let input = json!({"model": EMBEDDER, "input": vec!["bees"; 4 * openai::EMBED_GROUP]});
    let embedding = send(addr, "POST", "/v1/embeddings", &input.to_string()).await;
    let embedder = t.embedder.clone();
    eventually("the first group is embedding", || embedder.calls() == 1).await;
    drop(embedding);
    let open = t.server.connections.clone();
    eventually("the connection closed", || open.total() == 0).await;
    t.embedder.open();
    let mut after =
        send(addr, "POST", "/v1/embeddings", &json!({"model": EMBEDDER, "input": "bees"}).to_string()).await;
    let mut buf = [0u8; 4096];
    let n = after.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert_eq!(t.embedder.calls(), 2, "the first group of the request that left, then the next request's");
    assert!(t.script.asked().is_empty(), "the question whose caller left was never answered");
    stop.cancel();
}
