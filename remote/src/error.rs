//! What goes wrong with models on remote servers, in variants that say what the caller can
//! do: fix the config (`NoEndpoints`, `Tokenizer`, `NoScoring`), change the request
//! (`Refused` by the request's fault), or wait for the servers (`Unreachable`, `Deadline`).
//! The rest are one server's reasons, carried inside `Unreachable`.

use std::path::PathBuf;
use std::time::Duration;

use crate::pool::human_size;
use crate::score::NO_PROMPT_LOGPROBS;

/// Why a pool of servers did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The settings name no server: configure at least one endpoint.
    #[error("no endpoints configured")]
    NoEndpoints,
    /// The HTTP client could not be built (its TLS backend did not start).
    #[error("building the HTTP client: {0}")]
    Client(reqwest::Error),
    /// The configured `tokenizer` file cannot be read or is not a tokenizer: fix the path,
    /// or leave it out (counts then come from the servers or an estimate).
    #[error("cannot read the tokenizer file {}: {reason}", .path.display())]
    Tokenizer { path: PathBuf, reason: String },
    /// Every server was tried and failed, or none is healthy (a failed server is out until
    /// a health check passes): try again later. `tried` holds each server's reason, in the
    /// order they were tried.
    #[error("no engine endpoint is reachable ({})", reasons(.tried))]
    Unreachable { tried: Vec<ServerFailure> },
    /// A server answered with an error status, and `body` is the start of its answer (cut to
    /// 300 characters). See [`RemoteError::is_callers_fault`]: a 4xx other than 408 and 429
    /// is the request's fault and is returned as it is; a 5xx, 408 or 429 is that server's
    /// state, so another is tried and it appears inside `Unreachable`.
    #[error("HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    /// The servers answer without log-probabilities for the prompt (llama.cpp's server,
    /// Ollama), or refuse to give them: the `llm` reranker cannot work with them; configure a
    /// `cross-encoder` or no reranker.
    #[error("{NO_PROMPT_LOGPROBS}{}", .refusal.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    NoScoring {
        /// The servers' refusal (`HTTP 400: …`), when they refused rather than answered.
        refusal: Option<Box<RemoteError>>,
    },
    /// The whole request, failovers and a streamed answer included, took longer than the
    /// pool's `request_deadline`; its place on the server was given back.
    #[error("the engine did not finish within {} s", .0.as_secs_f32())]
    Deadline(Duration),
    /// A server sent an answer over the bound Lore reads whole.
    #[error("the answer is over {}", human_size(*.limit_bytes))]
    AnswerTooLarge { limit_bytes: usize },
    /// A server streamed more than the bound without ending an event.
    #[error("the engine sent over {} without an event boundary", human_size(*.limit_bytes))]
    EventTooLarge { limit_bytes: usize },
    /// A server could not be reached, or did not start answering in time.
    #[error("request: {0}")]
    Request(reqwest::Error),
    /// A server's answer broke off while it was read.
    #[error("the answer broke off: {0}")]
    BrokeOff(reqwest::Error),
    /// A server answered, but not in the format the API says (the message says how).
    #[error("{0}")]
    Malformed(String),
    /// A server reported an error in the middle of a streamed answer.
    #[error("the server reported: {0}")]
    Reported(String),
    /// A server failed after part of the answer was streamed, and so did the try that
    /// answered again.
    #[error("the engine failed twice mid-answer: {0}")]
    FailedTwice(Box<ServerFailure>),
}

impl RemoteError {
    /// Whether the request itself was refused (HTTP 4xx other than 408 and 429: too long
    /// for the model, a bad parameter, a missing route, a wrong key): every server would
    /// refuse it, so trying another does not help.
    pub fn is_callers_fault(&self) -> bool {
        matches!(self, Self::Refused { status, .. } if (400..500).contains(status) && !matches!(status, 408 | 429))
    }
}

/// One server's reason within a request.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {error}")]
pub struct ServerFailure {
    /// The endpoint (a generation), or the address asked on it (`…/v1/embeddings`).
    pub url: String,
    pub error: RemoteError,
}

fn reasons(tried: &[ServerFailure]) -> String {
    if tried.is_empty() {
        return "all are out until a health check passes".into();
    }
    tried.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_4xx_other_than_408_and_429_is_the_callers_fault() {
        let refused = |status| RemoteError::Refused { status, body: String::new() };
        assert!(refused(400).is_callers_fault() && refused(404).is_callers_fault());
        assert!(!refused(408).is_callers_fault() && !refused(429).is_callers_fault());
        assert!(!refused(500).is_callers_fault() && !refused(503).is_callers_fault());
        assert!(!RemoteError::Deadline(Duration::from_secs(1)).is_callers_fault());
    }

    #[test]
    fn unreachable_names_each_server_and_its_reason() {
        let failure = |url: &str, error| ServerFailure { url: url.into(), error };
        let error = RemoteError::Unreachable {
            tried: vec![
                failure("http://a/v1", RemoteError::Refused { status: 503, body: "loading".into() }),
                failure("http://b/v1", RemoteError::AnswerTooLarge { limit_bytes: 32 << 20 }),
            ],
        };
        assert_eq!(
            error.to_string(),
            "no engine endpoint is reachable (http://a/v1: HTTP 503: loading; http://b/v1: the answer is over 32 MiB)"
        );
        let none = RemoteError::Unreachable { tried: vec![] }.to_string();
        assert_eq!(none, "no engine endpoint is reachable (all are out until a health check passes)");
    }

    #[test]
    fn no_scoring_says_why_and_quotes_a_refusal() {
        assert_eq!(RemoteError::NoScoring { refusal: None }.to_string(), NO_PROMPT_LOGPROBS);
        let refusal = Some(Box::new(RemoteError::Refused { status: 400, body: "Only no echo is supported".into() }));
        let error = RemoteError::NoScoring { refusal }.to_string();
        assert_eq!(error, format!("{NO_PROMPT_LOGPROBS}: HTTP 400: Only no echo is supported"));
    }

    #[test]
    fn bounds_and_deadlines_are_said_in_units_people_read() {
        assert_eq!(RemoteError::Deadline(Duration::from_secs(2)).to_string(), "the engine did not finish within 2 s");
        assert_eq!(
            RemoteError::EventTooLarge { limit_bytes: 1 << 20 }.to_string(),
            "the engine sent over 1 MiB without an event boundary"
        );
    }
}
