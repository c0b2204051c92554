//! A fake OpenAI-compatible engine (as vLLM, TGI or llama.cpp's server speak it) on
//! 127.0.0.1: `POST /v1/completions` streamed as server-sent events in OpenAI's
//! `text_completion` chunk format, and `GET /v1/models` for health checks. Each server
//! behaves as a test sets it: answering, failing with 500, dropping its stream midway, or
//! answering slowly; it counts requests and the most it served at once.
//!
//! Not modelled: non-streamed completions, chat completions, token usage, logprobs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
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
}

impl FakeOpenAi {
    pub async fn start(behaviour: Behaviour) -> Self {
        let state = Arc::new(Shared {
            behaviour: Mutex::new(behaviour),
            completions: AtomicUsize::new(0),
            serving: AtomicUsize::new(0),
            most_at_once: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/v1/completions", post(completions))
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
    let behaviour = behaviour(&state);
    if behaviour == Behaviour::Fail {
        let error = json!({"error": {"message": "engine failure", "type": "server_error"}});
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(error)).into_response();
    }
    assert_eq!(body["stream"], true, "lore streams completions");
    let now = state.serving.fetch_add(1, Ordering::SeqCst) + 1;
    state.most_at_once.fetch_max(now, Ordering::SeqCst);
    let serving = Serving(state.clone());
    let words: Vec<String> = ANSWER.split_inclusive(' ').map(String::from).collect();
    let stream = answer_stream(words, behaviour, serving);
    Response::builder().header("content-type", "text/event-stream").body(Body::from_stream(stream)).unwrap()
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
