//! A fake OpenAI-compatible engine (as vLLM speaks it) on 127.0.0.1:
//! - `POST /v1/completions` streamed as server-sent events in OpenAI's `text_completion`
//!   chunk format; with `echo` and `logprobs`, answered whole with the prompt's tokens (a
//!   word each) and a log-probability per token as vLLM shapes them;
//! - `POST /v1/embeddings`: a vector per input (from the words' hashes, not normalised);
//! - `POST /tokenize`: vLLM's `{"count", "tokens"}` (a token per word);
//! - `GET /v1/models` for health checks.
//!
//! Each server behaves as a test sets it: answering, failing with 500, dropping its stream
//! midway, answering slowly, answering as llama.cpp's server does where it differs (no
//! `echo`, no `/tokenize` route), or misbehaving without end (a stream of text or of
//! keep-alive comments that never finishes, an event that never ends, a body that never
//! ends); it counts requests and the most it served at once, and keeps the last
//! completion request.
//!
//! Not modelled: chat completions, token usage.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::Server;

/// What every answering fake says, a word per chunk.
pub const ANSWER: &str = "Bees dance to show the others where the flowers are.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Answer,
    /// Completions and health checks get a 500.
    Fail,
    /// Two chunks of the answer, then the connection breaks.
    DropMidway,
    /// The whole answer, a chunk every 100 ms.
    Slow,
    /// Answers, but refuses `echo` with llama.cpp's 400 and has no `/tokenize`.
    LlamaCppServer,
    /// Streams text chunks, a word every 2 ms, and never finishes.
    StreamsForever,
    /// Streams keep-alive comments every 50 ms, no text, and never finishes.
    KeepsAliveForever,
    /// Starts one event (`data: aaa…`) and never ends it.
    EndlessEvent,
    /// Answers embeddings with a body that never ends.
    EndlessBody,
}

pub struct FakeOpenAi {
    state: Arc<Shared>,
    server: Server,
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    completions: AtomicUsize,
    serving: AtomicUsize,
    most_at_once: AtomicUsize,
    /// The number of texts in each embeddings request.
    embedding_batches: Mutex<Vec<usize>>,
    tokenized: AtomicUsize,
    last_completion: Mutex<Option<Value>>,
}

impl FakeOpenAi {
    pub async fn start(behaviour: Behaviour) -> Self {
        let state = Arc::new(Shared {
            behaviour: Mutex::new(behaviour),
            completions: AtomicUsize::new(0),
            serving: AtomicUsize::new(0),
            most_at_once: AtomicUsize::new(0),
            embedding_batches: Mutex::new(Vec::new()),
            tokenized: AtomicUsize::new(0),
            last_completion: Mutex::new(None),
        });
        let app = Router::new()
            .route("/v1/completions", post(completions))
            .route("/v1/embeddings", post(embeddings))
            .route("/tokenize", post(tokenize))
            .route("/v1/models", get(models))
            .with_state(state.clone());
        Self { state, server: Server::start(app).await }
    }

    /// The base URL an OpenAI client takes.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.server.addr)
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock().unwrap() = behaviour;
    }

    /// Completion requests received so far.
    pub fn completions(&self) -> usize {
        self.state.completions.load(Ordering::SeqCst)
    }

    /// The number of texts in each embeddings request, in order of arrival.
    pub fn embedding_batches(&self) -> Vec<usize> {
        self.state.embedding_batches.lock().unwrap().clone()
    }

    /// `/tokenize` requests answered.
    pub fn tokenized(&self) -> usize {
        self.state.tokenized.load(Ordering::SeqCst)
    }

    /// Completions it is streaming now (a stream whose client left ends when the server
    /// notices the closed connection).
    pub fn serving(&self) -> usize {
        self.state.serving.load(Ordering::SeqCst)
    }

    /// The body of the last completion request.
    pub fn last_completion(&self) -> Option<Value> {
        self.state.last_completion.lock().unwrap().clone()
    }

    /// The most completions it streamed at the same time.
    pub fn most_at_once(&self) -> usize {
        self.state.most_at_once.load(Ordering::SeqCst)
    }
}

fn behaviour(state: &Shared) -> Behaviour {
    *state.behaviour.lock().unwrap()
}

async fn models(State(state): State<Arc<Shared>>) -> Response {
    match behaviour(&state) {
        Behaviour::Fail => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        _ => Json(json!({"object": "list", "data": [{"id": "fake", "object": "model"}]})).into_response(),
    }
}

fn chunk(text: &str, finish_reason: Option<&str>) -> Bytes {
    let chunk = json!({
        "id": "cmpl-fake",
        "object": "text_completion",
        "model": "fake",
        "choices": [{"index": 0, "text": text, "finish_reason": finish_reason}],
    });
    Bytes::from(format!("data: {chunk}\n\n"))
}

/// Releases its place in the count of streams served at once when the stream ends.
struct Serving(Arc<Shared>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.serving.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn completions(State(state): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    state.completions.fetch_add(1, Ordering::SeqCst);
    *state.last_completion.lock().unwrap() = Some(body.clone());
    let behaviour = behaviour(&state);
    if behaviour == Behaviour::Fail {
        let error = json!({"error": {"message": "engine failure", "type": "server_error"}});
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(error)).into_response();
    }
    if body["echo"] == true {
        return echo(&body, behaviour);
    }
    assert_eq!(body["stream"], true, "lore streams completions");
    let now = state.serving.fetch_add(1, Ordering::SeqCst) + 1;
    state.most_at_once.fetch_max(now, Ordering::SeqCst);
    let serving = Serving(state.clone());
    let body = match behaviour {
        Behaviour::StreamsForever | Behaviour::KeepsAliveForever | Behaviour::EndlessEvent => {
            Body::from_stream(endless_stream(behaviour, serving))
        }
        _ => {
            let words: Vec<String> = ANSWER.split_inclusive(' ').map(String::from).collect();
            Body::from_stream(answer_stream(words, behaviour, serving))
        }
    };
    Response::builder().header("content-type", "text/event-stream").body(body).unwrap()
}

/// A stream that never finishes, as `behaviour` says; `serving` is given back when the
/// server drops it (its client went away).
fn endless_stream(
    behaviour: Behaviour,
    serving: Serving,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let (pause, piece) = match behaviour {
        Behaviour::StreamsForever => (Duration::from_millis(2), chunk("bees ", None)),
        Behaviour::KeepsAliveForever => (Duration::from_millis(50), Bytes::from(": keep-alive\n\n")),
        _ => (Duration::from_millis(1), Bytes::from(vec![b'a'; 64 << 10])),
    };
    let start = if behaviour == Behaviour::EndlessEvent { Bytes::from("data: ") } else { Bytes::new() };
    futures::stream::once(async move { Ok(start) }).chain(futures::stream::unfold(serving, move |serving| {
        let piece = piece.clone();
        async move {
            tokio::time::sleep(pause).await;
            Some((Ok(piece), serving))
        }
    }))
}

fn answer_stream(
    words: Vec<String>,
    behaviour: Behaviour,
    serving: Serving,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let pause = if behaviour == Behaviour::Slow { Duration::from_millis(100) } else { Duration::from_millis(5) };
    // The place is given back as the stream's end goes out, as a server's count would.
    futures::stream::unfold((0usize, words, Some(serving)), move |(i, words, mut serving)| async move {
        tokio::time::sleep(pause).await;
        if behaviour == Behaviour::DropMidway && i == 2 {
            serving.take();
            return Some((Err(std::io::Error::other("connection dropped")), (usize::MAX, words, serving)));
        }
        match i {
            usize::MAX => None,
            i if i < words.len() => Some((Ok(chunk(&words[i], None)), (i + 1, words, serving))),
            i if i == words.len() => Some((Ok(chunk("", Some("stop"))), (i + 1, words, serving))),
            i if i == words.len() + 1 => {
                serving.take();
                Some((Ok(Bytes::from("data: [DONE]\n\n")), (usize::MAX, words, serving)))
            }
            _ => None,
        }
    })
}

/// The prompt's words as tokens, each scored by how often it appeared before (a word the
/// context has seen is likely): what the `llm` reranker needs to tell passages apart.
fn echo(body: &Value, behaviour: Behaviour) -> Response {
    if behaviour == Behaviour::LlamaCppServer {
        let error =
            json!({"error": {"code": 400, "message": "Only no echo is supported", "type": "invalid_request_error"}});
        return (StatusCode::BAD_REQUEST, Json(error)).into_response();
    }
    assert!(body["logprobs"].is_number() && body["stream"] != true, "scoring asks for whole answers: {body}");
    let prompt = body["prompt"].as_str().unwrap();
    let (mut tokens, mut offsets, mut logprobs) = (vec![], vec![], vec![]);
    let mut seen: Vec<String> = Vec::new();
    let mut offset = 0;
    for token in prompt.split_inclusive(' ') {
        let word = token.trim().to_lowercase();
        let logprob = if seen.is_empty() {
            Value::Null
        } else if seen.contains(&word) {
            json!(-0.5)
        } else {
            json!(-6.0)
        };
        tokens.push(token.to_string());
        offsets.push(offset);
        logprobs.push(logprob);
        offset += token.chars().count();
        seen.push(word);
    }
    // The one generated token, which scoring must not count.
    tokens.push(".".into());
    offsets.push(offset);
    logprobs.push(json!(-20.0));
    Json(json!({
        "object": "text_completion",
        "model": "fake",
        "choices": [{"index": 0, "text": format!("{prompt}."), "finish_reason": "length",
            "logprobs": {"tokens": tokens, "text_offset": offsets, "token_logprobs": logprobs, "top_logprobs": null}}],
    }))
    .into_response()
}

async fn embeddings(State(state): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    match behaviour(&state) {
        Behaviour::Fail => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Behaviour::EndlessBody => {
            // A JSON array of numbers that goes on for ever, 64 KiB at a time.
            let numbers = Bytes::from("0.5,".repeat(16 << 10));
            let rest = futures::stream::repeat_with(move || Ok::<_, std::io::Error>(numbers.clone()));
            let start = futures::stream::once(async { Ok(Bytes::from(r#"{"data":[{"index":0,"embedding":["#)) });
            return Response::builder()
                .header("content-type", "application/json")
                .body(Body::from_stream(start.chain(rest)))
                .unwrap();
        }
        _ => {}
    }
    let texts: Vec<String> = match &body["input"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(texts) => texts.iter().map(|t| t.as_str().unwrap().to_string()).collect(),
        other => panic!("input: {other}"),
    };
    state.embedding_batches.lock().unwrap().push(texts.len());
    // Listed last first, as a server may: the index puts them in order.
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .rev()
        .map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": word_vector(text)}))
        .collect();
    Json(json!({"object": "list", "data": data, "model": body["model"]})).into_response()
}

/// A bag of words in 16 dimensions, scaled so it is not of unit length.
pub fn word_vector(text: &str) -> Vec<f32> {
    let mut v = vec![0.0f32; 16];
    for word in text.split_whitespace() {
        let hash = word.to_lowercase().bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        v[(hash % 16) as usize] += 3.0;
    }
    v
}

async fn tokenize(State(state): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    if behaviour(&state) == Behaviour::LlamaCppServer {
        return StatusCode::NOT_FOUND.into_response();
    }
    state.tokenized.fetch_add(1, Ordering::SeqCst);
    let words = body["prompt"].as_str().unwrap().split_whitespace().count();
    Json(json!({"count": words, "tokens": (0..words).collect::<Vec<_>>(), "max_model_len": 2048})).into_response()
}
