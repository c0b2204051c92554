//! Generation on a pool: OpenAI's streamed chat completions (the server applies the
//! model's chat template: instruct models) or plain completions (the bot's own template:
//! base models such as GPT-J). A request that fails — or whose stream drops — before any
//! text was produced is retried on another endpoint; after text was produced, a short note
//! is streamed and the answer is produced again, once.

use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use lore_core::{ChatModel, Event, Finish, GenerateError, GenerateRequest, Generation, PromptText, StopReason};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::pool::{error_text, not_finished_within, Endpoint, EndpointState, Pool, PoolSettings};
use crate::tokens::{CountedBy, Tokens};
use crate::{chat, special, sse};

/// What the asker sees when an engine failed after part of the answer was streamed.
pub const RETRY_NOTE: &str = "\n\n(The engine failed mid-answer; answering again.)\n\n";

/// A generator on a pool of servers.
#[derive(Debug, Clone)]
pub struct RemoteGeneratorSettings {
    pub pool: PoolSettings,
    /// The model name the servers know.
    pub model: String,
    /// Chat completions (the servers apply the model's chat template); else plain
    /// completions of the prompt Lore writes.
    pub chat: bool,
    /// The model's context window, in tokens (servers do not report it in a standard way).
    pub context_tokens: usize,
    /// The model's `tokenizer.json`, for exact token counts without asking the servers.
    pub tokenizer: Option<PathBuf>,
}

/// A generator on a pool of OpenAI-compatible servers. Cheap to clone.
#[derive(Clone)]
pub struct RemoteGenerator {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: Arc<Pool>,
    pub(crate) settings: RemoteGeneratorSettings,
    tokens: Tokens,
}

/// Why one try on one endpoint did not finish the answer.
#[derive(Debug, thiserror::Error)]
enum TryError {
    #[error("{0}")]
    Failed(String),
    /// The server refused the request itself (4xx: too long for its window, a bad
    /// parameter): every server would, and none of them is at fault.
    #[error("{0}")]
    Refused(String),
    #[error("cancelled")]
    Cancelled,
}

impl RemoteGenerator {
    /// Starts using the pool (see [`PoolSettings`]). Needs a tokio runtime.
    pub fn new(settings: RemoteGeneratorSettings) -> Result<Self, GenerateError> {
        let tokens = Tokens::new(settings.tokenizer.as_deref(), true).map_err(GenerateError::Failed)?;
        let pool = Pool::start(settings.pool.clone()).map_err(GenerateError::Failed)?;
        Ok(Self { inner: Arc::new(Inner { pool, settings, tokens }) })
    }

    pub fn endpoints(&self) -> Vec<EndpointState> {
        self.inner.pool.states()
    }

    /// Each endpoint and whether it answers (`Err` says why not).
    pub async fn check_endpoints(&self) -> Vec<(String, Result<(), String>)> {
        self.inner.pool.check_all().await
    }

    /// How prompt tokens are counted (the server's `/tokenize` until it turns out to
    /// have none).
    pub fn counted_by(&self) -> CountedBy {
        self.inner.tokens.counted_by()
    }
}

#[async_trait::async_trait]
impl ChatModel for RemoteGenerator {
    fn context_tokens(&self) -> usize {
        self.inner.settings.context_tokens
    }

    async fn count_tokens(&self, text: &str) -> usize {
        self.inner.tokens.count(&self.inner.pool, &self.inner.settings.model, text).await
    }

    /// Chat messages are counted by their contents plus a few tokens each for the markers
    /// the server's template adds around them.
    async fn count_prompt_tokens(&self, prompt: &PromptText) -> usize {
        match chat::decode(prompt) {
            Some(messages) => {
                let contents: Vec<&str> = messages.iter().map(|(_, content)| content.as_str()).collect();
                self.count_tokens(&contents.join("\n")).await + messages.len() * chat::TOKENS_PER_MESSAGE
            }
            None => self.count_tokens(&prompt.text()).await,
        }
    }

    /// With chat completions, the messages travel as they are (the server applies the
    /// template); else `None`, and prompts are built from the bot's own template.
    fn render_chat(&self, messages: &[(&str, &str)]) -> Option<PromptText> {
        self.inner.settings.chat.then(|| chat::encode(messages))
    }

    fn generate(&self, request: GenerateRequest) -> Result<Generation, GenerateError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        // In the asker's span: the retries' and failovers' lines name its question.
        let span = tracing::Span::current();
        tokio::spawn(answer(self.inner.clone(), request, tx, cancel.clone()).instrument(span));
        Ok(Generation::new(rx, cancel))
    }
}

/// Runs one request on the pool until it is answered, failing over as the module says,
/// within the pool's `request_deadline`: past it the request fails in words, and dropping
/// the try in progress gives its place on the endpoint back and closes its connection.
async fn answer(
    inner: Arc<Inner>,
    request: GenerateRequest,
    tx: mpsc::UnboundedSender<Event>,
    cancel: CancellationToken,
) {
    let deadline = inner.pool.settings.request_deadline;
    if tokio::time::timeout(deadline, answer_anywhere(&inner, &request, &tx, &cancel)).await.is_err() {
        let _ = tx.send(Event::Failed(not_finished_within(deadline)));
    }
}

async fn answer_anywhere(
    inner: &Inner,
    request: &GenerateRequest,
    tx: &mpsc::UnboundedSender<Event>,
    cancel: &CancellationToken,
) {
    let mut failed_on: Vec<usize> = Vec::new();
    let mut answered_again = false;
    let mut last_error = None;
    loop {
        let Some(place) = inner.pool.take_place(&failed_on, cancel).await else {
            if !cancel.is_cancelled() {
                let why = last_error.map(|e| format!(" (last error: {e})")).unwrap_or_default();
                let _ = tx.send(Event::Failed(format!("no engine endpoint is reachable{why}")));
            }
            return;
        };
        let mut produced = false;
        let outcome = stream_once(inner, place.endpoint(), request, tx, cancel, &mut produced).await;
        let index = place.index;
        let url = place.endpoint().url.clone();
        drop(place);
        let error = match outcome {
            Ok(finish) => {
                let _ = tx.send(Event::Done(finish));
                return;
            }
            Err(TryError::Cancelled) => return,
            Err(TryError::Refused(error)) => {
                let _ = tx.send(Event::Failed(format!("the engine refused the request: {error}")));
                return;
            }
            Err(TryError::Failed(error)) => error,
        };
        inner.pool.take_out(index, &error);
        failed_on.push(index);
        if produced {
            if answered_again {
                let _ = tx.send(Event::Failed(format!("the engine failed twice mid-answer: {error}")));
                return;
            }
            answered_again = true;
            let _ = tx.send(Event::Text(RETRY_NOTE.into()));
        }
        last_error = Some(format!("{url}: {error}"));
    }
}

/// The most bytes of text one generated token is taken to be: a server that streams more
/// than `max_tokens` times this has gone past `max_tokens`, whatever it counts.
const MAX_BYTES_PER_TOKEN: usize = 32;

/// One try on one endpoint: streams the completion's text into `tx`. `produced` tells
/// whether any text went out, which decides how a failure is handled. `max_tokens` holds
/// here too: the answer stops at that many streamed pieces (or
/// [`MAX_BYTES_PER_TOKEN`] bytes each), whatever the server does.
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
            body["messages"] = messages
                .iter()
                .map(|(role, content)| json!({"role": role, "content": special::defuse(content)}))
                .collect();
            "chat/completions"
        }
        None => {
            body["prompt"] = special::completion_prompt(&inner.tokens, &request.prompt);
            "completions"
        }
    };
    let sent = inner.pool.request(reqwest::Method::POST, format!("{}/{path}", endpoint.url)).json(&body).send();
    let response = tokio::select! {
        response = sent => response.map_err(|e| TryError::Failed(format!("request: {e}")))?,
        () = cancel.cancelled() => return Err(TryError::Cancelled),
    };
    let status = response.status();
    if !status.is_success() {
        let why = format!("HTTP {status}: {}", error_text(response).await);
        // 408 and 429 are the server's state, not the request's: another may take it.
        let refused = status.is_client_error() && !matches!(status.as_u16(), 408 | 429);
        return Err(if refused { TryError::Refused(why) } else { TryError::Failed(why) });
    }
    let mut events = sse::Events::default();
    let mut bytes = response.bytes_stream();
    let mut generated = 0;
    let mut sent_bytes = 0;
    let max_bytes = request.max_tokens.saturating_mul(MAX_BYTES_PER_TOKEN);
    let mut reason = None;
    let finish = |reason, generated_tokens| Finish {
        reason,
        prompt_tokens: 0,
        reused_tokens: 0,
        generated_tokens,
        token_logprobs: Vec::new(),
    };
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
        for data in events.push(&chunk).map_err(TryError::Failed)? {
            if data == "[DONE]" {
                return Ok(finish(reason.unwrap_or(StopReason::EndOfText), generated));
            }
            let value: Value = serde_json::from_str(&data).map_err(|e| {
                TryError::Failed(format!("bad chunk {:?}: {e}", data.chars().take(200).collect::<String>()))
            })?;
            if let Some(error) = value.get("error") {
                return Err(TryError::Failed(format!("the server reported: {error}")));
            }
            let choice = &value["choices"][0];
            reason = match choice["finish_reason"].as_str() {
                Some("length") => Some(StopReason::Length),
                Some("stop") if request.stop.is_empty() => Some(StopReason::EndOfText),
                Some("stop") => Some(StopReason::StopString),
                _ => reason,
            };
            // Plain completions carry `text`, chat completions a `delta`.
            let text = choice["text"].as_str().or_else(|| choice["delta"]["content"].as_str());
            let Some(text) = text.filter(|t| !t.is_empty()) else { continue };
            let text = cut_to(text, max_bytes.saturating_sub(sent_bytes));
            if !text.is_empty() {
                generated += 1;
                sent_bytes += text.len();
                *produced = true;
                if tx.send(Event::Text(text.to_string())).is_err() {
                    return Err(TryError::Cancelled);
                }
            }
            if generated >= request.max_tokens || sent_bytes >= max_bytes {
                // Dropping the response closes the connection: the server stops too.
                return Ok(finish(reason.unwrap_or(StopReason::Length), generated));
            }
        }
    }
}

/// The longest start of `text` of at most `max` bytes that ends at a character.
fn cut_to(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piece_is_cut_at_a_character() {
        assert_eq!(cut_to("abc", 5), "abc");
        assert_eq!(cut_to("abc", 2), "ab");
        assert_eq!(cut_to("aé", 2), "a");
        assert_eq!(cut_to("é", 0), "");
    }
}
