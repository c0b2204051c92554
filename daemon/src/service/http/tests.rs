//! The HTTP server on stand-in models (no model files): names, keys, limits and the line
//! through the axum router (`oneshot`), and connections over real loopback sockets
//! through the server's own accept loop.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::Request as HttpRequest;
use lore_core::testing::{EchoModel, HashEmbedder};
use lore_core::{Chunk, Embedder, PluginContext, Sampling};
use lore_plugins::KbStore;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

use super::*;
use crate::config::Config;
use crate::question::evidence::EvidenceFinder;

const CONFIG: &str = "\
models:
  generator:
    path: /models/gen.gguf
    parallel: 1
  embedder:
    path: /models/emb.gguf
retrieval:
  rerankers: []
knowledge_bases:
  bees: {}
bots:
  docs:
    knowledge_base: bees
    memory_turns: 2
server:
  listen: 127.0.0.1:8080
";

const HOST: &str = "127.0.0.1:8080";

/// The hashing embedder, counting its calls; while `closed`, each call waits for a permit
/// of `gate`.
struct Gated {
    inner: HashEmbedder,
    calls: AtomicUsize,
    closed: std::sync::atomic::AtomicBool,
    gate: tokio::sync::Semaphore,
}

impl Gated {
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

/// A server for `docs` answering from one chunk about bees, `extra` appended to its
/// `server:` section (indented two spaces), with API keys `keys`.
struct Test {
    server: Shared,
    embedder: Arc<Gated>,
    max_body_bytes: usize,
    _dir: tempfile::TempDir,
}

impl Test {
    async fn start(extra: &str, keys: &[&str]) -> Self {
        Self::with_dim(extra, keys, HashEmbedder::default().dim).await
    }

    /// Like [`Test::start`], with embeddings of `dim` numbers.
    async fn with_dim(extra: &str, keys: &[&str], dim: usize) -> Self {
        // What went wrong shows under a failing test.
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(Path::new("lore.yaml"), &format!("{CONFIG}{extra}")).unwrap();
        let store = KbStore::open(dir.path()).await.unwrap();
        let embedder = Arc::new(Gated {
            inner: HashEmbedder { dim },
            calls: AtomicUsize::new(0),
            closed: Default::default(),
            gate: tokio::sync::Semaphore::new(0),
        });
        let kb = store.open_or_create("bees", embedder.dim()).await.unwrap();
        let chunk = Chunk::new("bees.md", 0, 1, 1, "Bees dance.".into());
        let vector = embedder.inner.vector(&chunk.text);
        kb.upsert(&[(chunk, vector)]).await.unwrap();
        kb.ensure_fulltext_index().await.unwrap();
        // Recording starts with the daemon.
        crate::metrics::handle();
        let plugins = PluginContext { embedder: embedder.clone(), scorer: None, cross_encoder: None };
        let pipeline = Pipeline {
            model: Arc::new(EchoModel::new(512, "Bees dance [1].")),
            max_answer_tokens: 64,
            sampling: Sampling::greedy(),
            evidence: EvidenceFinder::new(&plugins),
        };
        let answering =
            Answering { pipeline: pipeline.clone(), store: store.clone(), plugins, config: Arc::new(config.clone()) };
        let router = Arc::new(Router::new(&config, answering, None).unwrap());
        let cfg = config.server.clone().unwrap();
        let app = Arc::new(App {
            config,
            store,
            embedder: embedder.clone(),
            local_embedder: None,
            remote_embedder: None,
            generator: None,
            remote: None,
            cross_encoder: None,
        });
        let keys = keys.iter().map(|k| Key { value: k.to_string(), bots: vec![] }).collect();
        let mut server = Server::new(&cfg, cfg.listen, app, router, pipeline, AdapterStates::default(), keys);
        // Row counts kept for the whole test, however slow the machine.
        server.kb_rows = health::KbRows::new(&server.app, Duration::from_secs(3600));
        Self { server: Arc::new(server), embedder, max_body_bytes: cfg.max_body_bytes, _dir: dir }
    }

    fn routes(&self) -> axum::Router {
        routes(self.server.clone(), self.max_body_bytes)
    }

    /// Sends `request` through the router; the status and the body (JSON, else a string).
    async fn call(&self, request: HttpRequest<Body>) -> (StatusCode, Value) {
        let response = self.routes().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let body =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, body)
    }

    /// Takes the line's only place until the returned turn is dropped.
    async fn occupy_the_line(&self) -> crate::question::line::Turn {
        self.server.router.line().join("someone else").unwrap().turn(|_| {}).await
    }

    /// Takes the line's only place, then sends the chat completion `body` to `addr` and
    /// waits until it waits in line; the place and the connection.
    async fn ask_while_the_line_is_busy(
        &self,
        addr: std::net::SocketAddr,
        body: &Value,
    ) -> (crate::question::line::Turn, TcpStream) {
        let turn = self.occupy_the_line().await;
        let waiting = send(addr, "POST", "/v1/chat/completions", &body.to_string()).await;
        let line = self.server.router.line().clone();
        eventually("the question waits", || line.waiting() == 1).await;
        (turn, waiting)
    }

    /// Serves on a free loopback port until the token fires; the address.
    async fn listen(&self, limits: connections::Limits) -> (std::net::SocketAddr, CancellationToken) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let open = self.server.connections.clone();
        tokio::spawn(connections::serve(listener, self.routes(), limits, open, stop.clone()));
        (addr, stop)
    }
}

/// A GET of `path` addressed to `host`.
fn get_as(path: &str, host: &str) -> axum::http::request::Builder {
    HttpRequest::get(path).header(header::HOST, host)
}

fn get(path: &str) -> axum::http::request::Builder {
    get_as(path, HOST)
}

fn post(path: &str, body: &Value) -> HttpRequest<Body> {
    HttpRequest::post(path)
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn question(text: &str) -> Value {
    serde_json::json!({"model": "docs", "messages": [{"role": "user", "content": text}]})
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
}

#[tokio::test]
async fn ready_and_metrics_show_details_only_to_key_holders_and_read_row_counts_once_a_while() {
    let t = Test::start("", &["secret"]).await;
    let ready = |key: Option<&str>| {
        let request = get("/ready");
        let request = match key {
            Some(key) => request.header(header::AUTHORIZATION, format!("Bearer {key}")),
            None => request,
        };
        request.body(Body::empty()).unwrap()
    };
    let (status, anonymous) = t.call(ready(None)).await;
    assert_eq!((status, anonymous), (StatusCode::OK, serde_json::json!({"ready": true})));
    assert_eq!(t.call(ready(Some("wrong"))).await.1, serde_json::json!({"ready": true}));
    let (_, details) = t.call(ready(Some("secret"))).await;
    assert_eq!(details["knowledge_bases"]["bees"]["rows"], 1, "{details}");
    let metrics = |key: Option<&str>| {
        let request = get("/metrics");
        match key {
            Some(key) => request.header(header::AUTHORIZATION, format!("Bearer {key}")),
            None => request,
        }
        .body(Body::empty())
        .unwrap()
    };
    assert_eq!(t.call(metrics(None)).await.0, StatusCode::UNAUTHORIZED);
    let (status, text) = t.call(metrics(Some("secret"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.as_str().unwrap().contains("lore_knowledge_base_rows{kb=\"bees\"} 1"), "{text}");

    // A new row is not seen before the counts are old: a storm of requests reads the
    // knowledge base once in a while, not once per request.
    let kb = t.server.app.store.open_kb("bees").await.unwrap().unwrap();
    let chunk = Chunk::new("more.md", 0, 1, 1, "Wasps do not dance.".into());
    kb.upsert(&[(chunk.clone(), t.embedder.inner.vector(&chunk.text))]).await.unwrap();
    let storm: Vec<_> = (0..20)
        .map(|_| {
            let routes = t.routes();
            tokio::spawn(async move { routes.oneshot(ready(Some("secret"))).await.unwrap().status() })
        })
        .collect();
    for request in storm {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(t.call(ready(Some("secret"))).await.1["knowledge_bases"]["bees"]["rows"], 1);
}

#[tokio::test]
async fn an_embeddings_request_of_250k_inputs_is_refused_at_once_and_one_at_the_cap_is_answered() {
    let t = Test::start("", &[]).await;
    let model = t.server.embedder_name();
    let flood = serde_json::json!({"model": model, "input": vec!["a"; 250_000]});
    let (status, body) = t.call(post("/v1/embeddings", &flood)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("at most 256") && message.contains("250000 given"), "{message}");
    assert_eq!(t.embedder.calls(), 0, "nothing was embedded");
    let at_the_cap = serde_json::json!({"model": model, "input": vec!["bees dance"; 256]});
    let (status, body) = t.call(post("/v1/embeddings", &at_the_cap)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 256);
    assert_eq!(body["usage"]["prompt_tokens"], 512);
    assert_eq!(t.embedder.calls(), 256 / openai::EMBED_GROUP, "embedded in groups");
}

#[tokio::test]
async fn a_whole_answer_keeps_every_piece_and_an_abstention_is_answered() {
    let t = Test::start("", &[]).await;
    let (status, answer) = t.call(post("/v1/chat/completions", &question("Why do bees dance?"))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.starts_with("Bees dance [1]."), "the second piece was lost: {content}");
    // One piece only: the abstention's text.
    let (status, abstained) = t.call(post("/v1/chat/completions", &question("Who?"))).await;
    assert_eq!(status, StatusCode::OK, "{abstained}");
    let abstain_text = &t.server.app.config.retrieval.abstain_text;
    let said = abstained["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        said.starts_with(abstain_text.as_str()) && said.contains("(bees.md, line 1)"),
        "with the nearest topic: {said}"
    );
}

#[tokio::test]
async fn an_answer_says_whether_it_abstained_and_its_sources_open_the_passage_used_for_that_bot_only() {
    let t = Test::start("", &[]).await;
    let (status, answer) = t.call(post("/v1/chat/completions", &question("Why do bees dance?"))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!((answer["abstained"].as_bool(), answer["confidence"].as_f64()), (Some(false), None), "{answer}");
    let source = &answer["sources"][0];
    assert_eq!(source["source"], "bees.md", "{answer}");
    let url = source["url"].as_str().unwrap();
    assert_eq!(url, format!("/v1/sources/{}?model=docs", source["id"].as_str().unwrap()));
    let (status, passage) = t.call(get(url).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{passage}");
    assert_eq!((passage["text"].as_str(), passage["source"].as_str()), (Some("Bees dance."), Some("bees.md")));
    assert_eq!((passage["location"].as_str(), &passage["lines"]), (Some("line 1"), &serde_json::json!([1, 1])));

    let id = source["id"].as_str().unwrap();
    let open = |path: String| get(&path).body(Body::empty()).unwrap();
    let (status, body) = t.call(open(format!("/v1/sources/{id}?model=other"))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("model_not_found")));
    let (status, body) = t.call(open(format!("/v1/sources/{id}"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("?model="), "{body}");
    for wrong in ["00ff", "../../etc/passwd", "%27%20OR%201%3D1"] {
        let (status, body) = t.call(open(format!("/v1/sources/{wrong}?model=docs"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{wrong}: {body}");
    }

    let (status, abstained) = t.call(post("/v1/chat/completions", &question("Who?"))).await;
    assert_eq!(status, StatusCode::OK, "{abstained}");
    assert_eq!(abstained["abstained"].as_bool(), Some(true), "{abstained}");
}

#[tokio::test]
async fn one_api_key_with_questions_waiting_gets_a_429_in_words() {
    let t = Test::start("", &[]).await;
    let turn = t.occupy_the_line().await;
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let routes = t.routes();
            tokio::spawn(async move { routes.oneshot(post("/v1/chat/completions", &question("Why?"))).await })
        })
        .collect();
    let line = t.server.router.line().clone();
    eventually("three questions wait", || line.waiting() == 3).await;
    let (status, body) = t.call(post("/v1/chat/completions", &question("And why?"))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let message = body["error"]["message"].as_str().unwrap();
    assert_eq!(message, "you already have 3 questions waiting; I will answer those first");
    drop(turn);
    for request in waiting {
        assert_eq!(request.await.unwrap().unwrap().status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn a_question_longer_than_the_context_is_a_400_before_the_line_and_retrieval() {
    let t = Test::start("", &[]).await;
    let (status, body) = t.call(post("/v1/chat/completions", &question(&"why ".repeat(500)))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"].as_str().unwrap().contains("the question is too long: 500 tokens"), "{body}");
    assert_eq!(t.embedder.calls(), 0, "nothing was retrieved");
}

#[tokio::test]
async fn a_history_of_seventeen_thousand_turns_is_answered() {
    let t = Test::start("  max_body_bytes: 4000000\n", &[]).await;
    let mut messages: Vec<Value> = (0..17_000)
        .flat_map(|i| {
            [
                serde_json::json!({"role": "user", "content": format!("question {i}")}),
                serde_json::json!({"role": "assistant", "content": format!("answer {i}")}),
            ]
        })
        .collect();
    messages.push(serde_json::json!({"role": "user", "content": "Why do bees dance?"}));
    let body = serde_json::json!({"model": "docs", "messages": messages});
    let (status, answer) = t.call(post("/v1/chat/completions", &body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.starts_with("Bees") && content.contains("Sources:\n[1] bees.md"), "{answer}");
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
    let t = Test::with_dim("", &[], 4096).await;
    let (addr, stop) = t.listen(limits(100, 100, Duration::from_secs(1))).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut unread = socket.connect(addr).await.unwrap();
    let input = serde_json::json!({"model": t.server.embedder_name(), "input": vec!["bees dance"; 256]});
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
    let mut body = question("Why do bees dance?");
    body["stream"] = Value::Bool(true);
    let (turn, mut waiting) = t.ask_while_the_line_is_busy(addr, &body).await;
    let line = t.server.router.line().clone();
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
    let line = t.server.router.line().clone();
    drop(waiting);
    eventually("the place in line is freed", || line.waiting() == 0).await;
    drop(turn);
    // An embedding of four groups, its caller gone during the first: no more groups.
    t.embedder.close();
    let input = serde_json::json!({"model": t.server.embedder_name(), "input": vec!["bees"; 4 * openai::EMBED_GROUP]});
    let embedding = send(addr, "POST", "/v1/embeddings", &input.to_string()).await;
    let embedder = t.embedder.clone();
    eventually("the first group is embedding", || embedder.calls() == 1).await;
    drop(embedding);
    let open = t.server.connections.clone();
    eventually("the connection closed", || open.total() == 0).await;
    t.embedder.open();
    let mut after = send(
        addr,
        "POST",
        "/v1/embeddings",
        &serde_json::json!({"model": t.server.embedder_name(), "input": "bees"}).to_string(),
    )
    .await;
    let mut buf = [0u8; 4096];
    let n = after.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert_eq!(t.embedder.calls(), 2, "the first group of the request that left, then the next request's");
    stop.cancel();
}
