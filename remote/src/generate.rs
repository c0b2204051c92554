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

use crate::error::{RemoteError, ServerFailure};
use crate::pool::{refusal, Endpoint, EndpointState, Pool, PoolSettings};
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
enum TryError {
    /// The server failed, or refused the request itself
    /// ([`RemoteError::is_callers_fault`]: every server would, and none of them is at fault).
    Failed(RemoteError),
    Cancelled,
}

impl From<RemoteError> for TryError {
    fn from(error: RemoteError) -> Self {
        Self::Failed(error)
    }
}

impl RemoteGenerator {
    /// Starts using the pool (see [`PoolSettings`]). Needs a tokio runtime.
    pub fn new(settings: RemoteGeneratorSettings) -> Result<Self, RemoteError> {
        let tokens = Tokens::new(settings.tokenizer.as_deref(), true)?;
        let pool = Pool::start(settings.pool.clone())?;
        Ok(Self { inner: Arc::new(Inner { pool, settings, tokens }) })
    }

    pub fn endpoints(&self) -> Vec<EndpointState> {
        self.inner.pool.states()
    }

    /// Each endpoint and whether it answers (`Err` says why not).
    pub async fn check_endpoints(&self) -> Vec<(String, Result<(), RemoteError>)> {
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
    let outcome = tokio::time::timeout(deadline, answer_anywhere(&inner, &request, &tx, &cancel))
        .await
        .unwrap_or(Err(RemoteError::Deadline(deadline)));
    let why = match outcome {
        Ok(()) => return,
        Err(refused) if refused.is_callers_fault() => format!("the engine refused the request: {refused}"),
        Err(error) => error.to_string(),
    };
    let _ = tx.send(Event::Failed(why));
}

/// Streams the answer into `tx` and ends it with `Event::Done`; `Err` is why there is no
/// answer (a cancelled request has nobody to tell, so it ends with `Ok`).
async fn answer_anywhere(
    inner: &Inner,
    request: &GenerateRequest,
    tx: &mpsc::UnboundedSender<Event>,
    cancel: &CancellationToken,
) -> Result<(), RemoteError> {
    let mut failed_on: Vec<usize> = Vec::new();
    let mut tried = Vec::new();
    let mut answered_again = false;
    loop {
        let Some(place) = inner.pool.take_place(&failed_on, cancel).await else {
            return if cancel.is_cancelled() { Ok(()) } else { Err(RemoteError::Unreachable { tried }) };
        };
        let mut produced = false;
        let outcome = stream_once(inner, place.endpoint(), request, tx, cancel, &mut produced).await;
        let index = place.index;
        let url = place.endpoint().url.clone();
        drop(place);
        let error = match outcome {
            Ok(finish) => {
                let _ = tx.send(Event::Done(finish));
                return Ok(());
            }
            Err(TryError::Cancelled) => return Ok(()),
            Err(TryError::Failed(error)) if error.is_callers_fault() => return Err(error),
            Err(TryError::Failed(error)) => error,
        };
        inner.pool.take_out(index, &error);
        failed_on.push(index);
        let failure = ServerFailure { url, error };
        if produced {
            if answered_again {
                return Err(RemoteError::FailedTwice(Box::new(failure)));
            }
            answered_again = true;
            let _ = tx.send(Event::Text(RETRY_NOTE.into()));
        }
        tried.push(failure);
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
    let (body, path) = request_body(inner, request);
    let sent = inner.pool.request(reqwest::Method::POST, format!("{}/{path}", endpoint.url)).json(&body).send();
    let response = tokio::select! {
        response = sent => response.map_err(RemoteError::Request)?,
        () = cancel.cancelled() => return Err(TryError::Cancelled),
    };
    if !response.status().is_success() {
        return Err(refusal(response).await.into());
    }
    let mut events = sse::Events::default();
    let mut bytes = response.bytes_stream();
    let mut answer = Answer::new(request);
    loop {
        let chunk = tokio::select! {
            chunk = bytes.next() => chunk,
            () = cancel.cancelled() => return Err(TryError::Cancelled),
        };
        let chunk = match chunk {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => return Err(RemoteError::BrokeOff(e).into()),
            None => return Err(RemoteError::Malformed("the stream ended before [DONE]".into()).into()),
        };
        for data in events.push(&chunk)? {
            let text = match answer.read(&data)? {
                Read::Nothing => continue,
                Read::Done(finish) => return Ok(finish),
                Read::Text(text) => text,
            };
            *produced = true;
            if tx.send(Event::Text(text)).is_err() {
                return Err(TryError::Cancelled);
            }
            if let Some(finish) = answer.past_max_tokens() {
                // Dropping the response closes the connection: the server stops too.
                return Ok(finish);
            }
        }
    }
}

/// The request's JSON body and the path it goes to: the messages themselves to
/// `chat/completions` when the prompt carries them, else the prompt to `completions`.
fn request_body(inner: &Inner, request: &GenerateRequest) -> (Value, &'static str) {
    let mut body = json!({
        "model": inner.settings.model,
        "max_tokens": request.max_tokens,
        "temperature": request.sampling.temperature,
        "top_p": request.sampling.top_p,
        "seed": request.sampling.seed,
        "stop": request.stop,
        "stream": true,
    });
    let path = match chat::decode(&request.prompt) {
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
    (body, path)
}

/// What one streamed event gave.
enum Read {
    Nothing,
    Text(String),
    Done(Finish),
}

/// An answer as its events arrive: the text pieces counted against `max_tokens` (and
/// [`MAX_BYTES_PER_TOKEN`] bytes each), the server's finish reason remembered.
struct Answer<'a> {
    request: &'a GenerateRequest,
    generated: usize,
    sent_bytes: usize,
    max_bytes: usize,
    reason: Option<StopReason>,
}

impl<'a> Answer<'a> {
    fn new(request: &'a GenerateRequest) -> Self {
        let max_bytes = request.max_tokens.saturating_mul(MAX_BYTES_PER_TOKEN);
        Self { request, generated: 0, sent_bytes: 0, max_bytes, reason: None }
    }

    fn finish(&self, reason: StopReason) -> Finish {
        Finish {
            reason,
            prompt_tokens: 0,
            reused_tokens: 0,
            generated_tokens: self.generated,
            token_logprobs: Vec::new(),
        }
    }

    /// Reads one event's data: `[DONE]`, an error the server reports, or a chunk with text.
    fn read(&mut self, data: &str) -> Result<Read, RemoteError> {
        if data == "[DONE]" {
            return Ok(Read::Done(self.finish(self.reason.unwrap_or(StopReason::EndOfText))));
        }
        let value: Value = serde_json::from_str(data).map_err(|e| {
            RemoteError::Malformed(format!("bad chunk {:?}: {e}", data.chars().take(200).collect::<String>()))
        })?;
        if let Some(error) = value.get("error") {
            return Err(RemoteError::Reported(error.to_string()));
        }
        let choice = &value["choices"][0];
        self.reason = match choice["finish_reason"].as_str() {
            Some("length") => Some(StopReason::Length),
            Some("stop") if self.request.stop.is_empty() => Some(StopReason::EndOfText),
            Some("stop") => Some(StopReason::StopString),
            _ => self.reason,
        };
        // Plain completions carry `text`, chat completions a `delta`.
        let text = choice["text"].as_str().or_else(|| choice["delta"]["content"].as_str());
        let Some(text) = text.filter(|t| !t.is_empty()) else { return Ok(Read::Nothing) };
        let text = cut_to(text, self.max_bytes.saturating_sub(self.sent_bytes));
        if text.is_empty() {
            return Ok(self.past_max_tokens().map_or(Read::Nothing, Read::Done));
        }
        self.generated += 1;
        self.sent_bytes += text.len();
        Ok(Read::Text(text.to_string()))
    }

    /// The finish, once `max_tokens` pieces or their bytes have been streamed.
    fn past_max_tokens(&self) -> Option<Finish> {
        (self.generated >= self.request.max_tokens || self.sent_bytes >= self.max_bytes)
            .then(|| self.finish(self.reason.unwrap_or(StopReason::Length)))
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
    use lore_core::Sampling;

    use super::*;
    use crate::fake::{self, events, http, Fake};

    /// How a question to a pool of these servers fails.
    async fn failure(servers: &[&Fake]) -> String {
        let pool = fake::generator(servers.iter().map(|s| s.url.clone()).collect());
        let request = GenerateRequest {
            prompt: PromptText::template("Question: where do bees dance?\nAnswer:"),
            max_tokens: 16,
            stop: vec![],
            ignore_eos: false,
            sampling: Sampling::greedy(),
            lora: None,
        };
        match pool.generate(request).unwrap().collect().await {
            Err(GenerateError::Failed(why)) => why,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_piece_is_cut_at_a_character() {
        assert_eq!(cut_to("abc", 5), "abc");
        assert_eq!(cut_to("abc", 2), "ab");
        assert_eq!(cut_to("aé", 2), "a");
        assert_eq!(cut_to("é", 0), "");
    }

    #[tokio::test]
    async fn a_refused_request_is_said_so_and_not_tried_elsewhere() {
        let (first, second) = (
            Fake::start(http("400 Bad Request", "too long")).await,
            Fake::start(http("400 Bad Request", "too long")).await,
        );
        assert_eq!(failure(&[&first, &second]).await, "the engine refused the request: HTTP 400: too long");
        assert_eq!((first.requests(), second.requests()), (1, 0));
    }

    #[tokio::test]
    async fn an_error_in_the_stream_fails_over_and_is_quoted() {
        let (first, second) = (
            Fake::start(events(&[r#"{"error": "out of memory"}"#])).await,
            Fake::start(http("429 Too Many Requests", "busy")).await,
        );
        let why = failure(&[&first, &second]).await;
        let expected = format!(
            "no engine endpoint is reachable ({}: the server reported: \"out of memory\"; {}: HTTP 429: busy)",
            first.url, second.url
        );
        assert_eq!(why, expected);
    }

    #[tokio::test]
    async fn an_engine_failing_mid_answer_twice_is_said_so() {
        let cut_short = events(&[r#"{"choices": [{"text": "Bees"}]}"#]);
        let (first, second) = (Fake::start(cut_short.clone()).await, Fake::start(cut_short).await);
        let why = failure(&[&first, &second]).await;
        let expected = format!("the engine failed twice mid-answer: {}: the stream ended before [DONE]", second.url);
        assert_eq!(why, expected);
    }
}
