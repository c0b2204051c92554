//! Generation through OpenAI-compatible servers: the way to run models llama.cpp has no
//! graph for (GPT-J, GPT-Neo, LongT5 under vLLM or TGI), and the way a community outgrows
//! one machine (a pool of GPU servers shared by several daemons).
//!
//! [`RemoteGenerator`] implements [`ChatModel`] over OpenAI's streamed completions: chat
//! completions (`POST {endpoint}/chat/completions`, the server applies the model's chat
//! template) for instruct models, plain completions (`POST {endpoint}/completions`) for base
//! models such as GPT-J, whose prompts the bot's own template writes. With several endpoints, each request goes to the healthy one with
//! the fewest requests in flight, at most `max_in_flight` each. A request that fails — or
//! whose stream drops — before any text was produced is retried on another endpoint; after
//! text was produced, a short note is streamed and the answer is produced again, once. An
//! endpoint that fails is taken out and put back when a health check (`GET
//! {endpoint}/models`) succeeds.
//!
//! This crate knows HTTP and OpenAI's wire format; nothing of llama.cpp, LanceDB or chat
//! platforms.

mod chat;
mod sse;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lore_core::{ChatModel, Event, Finish, GenerateError, GenerateRequest, Generation, PromptText, StopReason};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// What the asker sees when an engine failed after part of the answer was streamed.
pub const RETRY_NOTE: &str = "\n\n(The engine failed mid-answer; answering again.)\n\n";

/// How to reach a pool of engines.
#[derive(Debug, Clone)]
pub struct RemoteSettings {
    /// Base URLs as OpenAI clients take them, ending in `/v1` (e.g. `http://gpu1:8000/v1`).
    pub endpoints: Vec<String>,
    /// The model name the servers know.
    pub model: String,
    /// Chat completions (the servers apply the model's chat template); else plain
    /// completions of the prompt Lore writes.
    pub chat: bool,
    /// Sent as a bearer token.
    pub api_key: Option<String>,
    /// Requests one endpoint serves at once; more wait for a free place.
    pub max_in_flight: usize,
    /// The model's context window, in tokens (servers do not report it in a standard way).
    pub context_tokens: usize,
    /// How often an endpoint taken out is checked.
    pub health_interval: Duration,
    /// Longest wait for a response to start, and between two pieces of a stream.
    pub timeout: Duration,
}

/// One server of the pool.
#[derive(Debug)]
struct Endpoint {
    url: String,
    in_flight: AtomicUsize,
    healthy: AtomicBool,
}

/// An endpoint's state, for readiness reports and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointState {
    pub url: String,
    pub healthy: bool,
    pub in_flight: usize,
}

struct Inner {
    settings: RemoteSettings,
    client: reqwest::Client,
    endpoints: Vec<Endpoint>,
    /// Signalled when a place frees up or an endpoint comes back.
    freed: Notify,
    /// Stops the health checks when the last handle goes.
    stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A generator on a pool of OpenAI-compatible servers. Cheap to clone.
#[derive(Clone)]
pub struct RemoteGenerator {
    inner: Arc<Inner>,
}

/// Why one try on one endpoint did not finish the answer.
#[derive(Debug, thiserror::Error)]
enum TryError {
    #[error("{0}")]
    Failed(String),
    #[error("cancelled")]
    Cancelled,
}

impl RemoteGenerator {
    /// Starts using `settings.endpoints` (all assumed healthy until one fails) and checks
    /// those taken out every `health_interval`. Needs a tokio runtime.
    pub fn new(settings: RemoteSettings) -> Result<Self, GenerateError> {
        if settings.endpoints.is_empty() {
            return Err(GenerateError::Failed("no endpoints configured".into()));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(settings.timeout)
            .read_timeout(settings.timeout)
            .build()
            .map_err(|e| GenerateError::Failed(format!("building the HTTP client: {e}")))?;
        let endpoints = settings
            .endpoints
            .iter()
            .map(|url| Endpoint {
                url: url.trim_end_matches('/').to_string(),
                in_flight: AtomicUsize::new(0),
                healthy: AtomicBool::new(true),
            })
            .collect();
        let inner =
            Arc::new(Inner { settings, client, endpoints, freed: Notify::new(), stop: CancellationToken::new() });
        tokio::spawn(check_health(Arc::downgrade(&inner), inner.stop.clone()));
        Ok(Self { inner })
    }

    pub fn endpoints(&self) -> Vec<EndpointState> {
        self.inner
            .endpoints
            .iter()
            .map(|e| EndpointState {
                url: e.url.clone(),
                healthy: e.healthy.load(Ordering::SeqCst),
                in_flight: e.in_flight.load(Ordering::SeqCst),
            })
            .collect()
    }
}

/// Token counts without the server's tokenizer: about four bytes of English per token for
/// the tokenizers in use, so counting one per three bytes errs towards prompts that fit.
fn estimate_tokens(text: &str) -> usize {
    text.len().div_ceil(3)
}

impl ChatModel for RemoteGenerator {
    fn context_tokens(&self) -> usize {
        self.inner.settings.context_tokens
    }

    fn count_tokens(&self, text: &str) -> usize {
        estimate_tokens(text)
    }

    fn count_prompt_tokens(&self, prompt: &PromptText) -> usize {
        estimate_tokens(&prompt.text())
    }

    /// With chat completions, the messages travel as they are (the server applies the
    /// template); else `None`, and prompts are built from the bot's own template.
    fn render_chat(&self, messages: &[(&str, &str)]) -> Option<PromptText> {
        self.inner.settings.chat.then(|| chat::encode(messages))
    }

    fn generate(&self, request: GenerateRequest) -> Result<Generation, GenerateError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        tokio::spawn(answer(self.inner.clone(), request, tx, cancel.clone()));
        Ok(Generation::new(rx, cancel))
    }
}

/// Runs one request on the pool until it is answered, failing over as the module says.
async fn answer(
    inner: Arc<Inner>,
    request: GenerateRequest,
    tx: mpsc::UnboundedSender<Event>,
    cancel: CancellationToken,
) {
    let mut failed_on: Vec<usize> = Vec::new();
    let mut answered_again = false;
    loop {
        let Some(index) = inner.take_place(&failed_on, &cancel).await else {
            if !cancel.is_cancelled() {
                let _ = tx.send(Event::Failed("no engine endpoint is reachable".into()));
            }
            return;
        };
        let endpoint = &inner.endpoints[index];
        let mut produced = false;
        let outcome = stream_once(&inner, endpoint, &request, &tx, &cancel, &mut produced).await;
        endpoint.in_flight.fetch_sub(1, Ordering::SeqCst);
        inner.freed.notify_waiters();
        let error = match outcome {
            Ok(finish) => {
                let _ = tx.send(Event::Done(finish));
                return;
            }
            Err(TryError::Cancelled) => return,
            Err(TryError::Failed(error)) => error,
        };
        inner.take_out(index, &error);
        failed_on.push(index);
        if produced {
            if answered_again {
                let _ = tx.send(Event::Failed(format!("the engine failed twice mid-answer: {error}")));
                return;
            }
            answered_again = true;
            let _ = tx.send(Event::Text(RETRY_NOTE.into()));
        }
    }
}

impl Inner {
    /// A place on the healthy endpoint (not yet failed for this request) with the fewest
    /// requests in flight, waiting while all are full. `None` when none is left to try.
    async fn take_place(&self, failed_on: &[usize], cancel: &CancellationToken) -> Option<usize> {
        loop {
            let freed = self.freed.notified();
            let mut candidates: Vec<(usize, &Endpoint)> = self
                .endpoints
                .iter()
                .enumerate()
                .filter(|(i, e)| !failed_on.contains(i) && e.healthy.load(Ordering::SeqCst))
                .collect();
            if candidates.is_empty() {
                return None;
            }
            candidates.sort_by_key(|(_, e)| e.in_flight.load(Ordering::SeqCst));
            // Taken with one atomic step: requests choosing at the same moment cannot both
            // take an endpoint's last place.
            let max = self.settings.max_in_flight;
            let taken = candidates.iter().find(|(_, e)| {
                e.in_flight.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1)).is_ok()
            });
            if let Some((index, _)) = taken {
                return Some(*index);
            }
            tokio::select! {
                () = freed => {}
                () = cancel.cancelled() => return None,
            }
        }
    }

    fn take_out(&self, index: usize, error: &str) {
        let endpoint = &self.endpoints[index];
        if endpoint.healthy.swap(false, Ordering::SeqCst) {
            tracing::warn!(endpoint = %endpoint.url, error, "engine endpoint failed; taking it out until it answers a health check");
        }
    }

    fn request(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let request = self.client.request(method, url);
        match &self.settings.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }
}

/// One try on one endpoint: streams the completion's text into `tx`. `produced` tells
/// whether any text went out, which decides how a failure is handled.
async fn stream_once(
    inner: &Inner,
    endpoint: &Endpoint,
    request: &GenerateRequest,
    tx: &mpsc::UnboundedSender<Event>,
    cancel: &CancellationToken,
    produced: &mut bool,
) -> Result<Finish, TryError> {
    let mut body = json!({
        "model": inner.settings.model,
        "max_tokens": request.max_tokens,
        "temperature": request.sampling.temperature,
        "top_p": request.sampling.top_p,
        "seed": request.sampling.seed,
        "stop": request.stop,
        "stream": true,
    });
    let messages = chat::decode(&request.prompt);
    let path = match &messages {
        Some(messages) => {
            body["messages"] =
                messages.iter().map(|(role, content)| json!({"role": role, "content": content})).collect();
            "chat/completions"
        }
        None => {
            body["prompt"] = request.prompt.text().into();
            "completions"
        }
    };
    let sent = inner.request(reqwest::Method::POST, format!("{}/{path}", endpoint.url)).json(&body).send();
    let response = tokio::select! {
        response = sent => response.map_err(|e| TryError::Failed(format!("request: {e}")))?,
        () = cancel.cancelled() => return Err(TryError::Cancelled),
    };
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(TryError::Failed(format!("HTTP {status}: {}", text.chars().take(200).collect::<String>())));
    }
    let mut events = sse::Events::default();
    let mut bytes = response.bytes_stream();
    let mut generated = 0;
    let mut reason = None;
    loop {
        let chunk = tokio::select! {
            chunk = bytes.next() => chunk,
            () = cancel.cancelled() => return Err(TryError::Cancelled),
        };
        let chunk = match chunk {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => return Err(TryError::Failed(format!("stream broke: {e}"))),
            None => return Err(TryError::Failed("the stream ended before [DONE]".into())),
        };
        for data in events.push(&chunk) {
            if data == "[DONE]" {
                let reason = reason.unwrap_or(StopReason::EndOfText);
                return Ok(Finish {
                    reason,
                    prompt_tokens: 0,
                    reused_tokens: 0,
                    generated_tokens: generated,
                    mean_logprob: None,
                });
            }
            let value: Value =
                serde_json::from_str(&data).map_err(|e| TryError::Failed(format!("bad chunk {data:?}: {e}")))?;
            if let Some(error) = value.get("error") {
                return Err(TryError::Failed(format!("the server reported: {error}")));
            }
            let choice = &value["choices"][0];
            // Plain completions carry `text`, chat completions a `delta`.
            let text = choice["text"].as_str().or_else(|| choice["delta"]["content"].as_str());
            if let Some(text) = text.filter(|t| !t.is_empty()) {
                generated += 1;
                *produced = true;
                if tx.send(Event::Text(text.to_string())).is_err() {
                    return Err(TryError::Cancelled);
                }
            }
            reason = match choice["finish_reason"].as_str() {
                Some("length") => Some(StopReason::Length),
                Some("stop") if request.stop.is_empty() => Some(StopReason::EndOfText),
                Some("stop") => Some(StopReason::StopString),
                _ => reason,
            };
        }
    }
}

/// Puts endpoints that were taken out back once `GET {endpoint}/models` answers.
async fn check_health(inner: std::sync::Weak<Inner>, stop: CancellationToken) {
    loop {
        let Some(pool) = inner.upgrade() else { return };
        let interval = pool.settings.health_interval;
        for endpoint in pool.endpoints.iter().filter(|e| !e.healthy.load(Ordering::SeqCst)) {
            let probe = pool.request(reqwest::Method::GET, format!("{}/models", endpoint.url)).send().await;
            if probe.is_ok_and(|r| r.status().is_success()) {
                endpoint.healthy.store(true, Ordering::SeqCst);
                pool.freed.notify_waiters();
                tracing::info!(endpoint = %endpoint.url, "engine endpoint is back");
            }
        }
        drop(pool);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_estimates_err_on_the_long_side() {
        // "How do bees dance?" is 6 tokens for GPT-2-style tokenizers.
        assert!(estimate_tokens("How do bees dance?") >= 6);
        assert_eq!(estimate_tokens(""), 0);
    }
}
