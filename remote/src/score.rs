//! Scoring on a pool, for the `llm` reranker: how likely the model finds a question after
//! a passage, read from the log-probabilities a server returns for the prompt itself
//! (`echo` with `logprobs` on `/v1/completions`). vLLM and Lore return them; llama.cpp's
//! server and Ollama give log-probabilities of generated tokens only, which cannot score a
//! given text, so there the reranker cannot work and `lore check` says so.

use lore_core::Scorer;
use serde_json::{json, Value};

use crate::generate::RemoteGenerator;
use crate::pool::{CallError, Route};

/// Why a pool cannot score (the servers' own words follow it).
pub const NO_PROMPT_LOGPROBS: &str =
    "the server returns no log-probabilities for the prompt (`echo` with `logprobs` on /v1/completions; vLLM and Lore do, llama.cpp's server and Ollama do not)";

/// Whether the `llm` reranker can work with a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scoring {
    Works,
    /// The servers answered without prompt log-probabilities (or refused the request).
    Unsupported(String),
    /// No server answered; unknown until one does.
    Unreachable(String),
}

impl RemoteGenerator {
    /// Scores a short text once, to tell whether the `llm` reranker can work here.
    pub async fn check_scoring(&self) -> Scoring {
        match self.score("The sky is", " blue").await {
            Ok(_) => Scoring::Works,
            Err(ScoreError::Unsupported(why)) => Scoring::Unsupported(why),
            Err(ScoreError::Unreachable(why)) => Scoring::Unreachable(why),
        }
    }

    async fn score(&self, context: &str, continuation: &str) -> Result<f64, ScoreError> {
        let prompt = format!("{context}{continuation}");
        let body = json!({
            "model": self.inner.settings.model,
            "prompt": prompt,
            // Some servers refuse 0; the one generated token is not counted.
            "max_tokens": 1,
            "echo": true,
            "logprobs": 1,
            "temperature": 0.0,
        });
        let answer = self.inner.pool.post_json(Route::Api("completions"), &body).await.map_err(|e| match e {
            CallError::Refused { status, body } => {
                ScoreError::Unsupported(format!("{NO_PROMPT_LOGPROBS}: HTTP {status}: {body}"))
            }
            CallError::Unreachable(e) => ScoreError::Unreachable(e),
        })?;
        continuation_logprob(&answer, context.chars().count(), prompt.chars().count())
            .ok_or_else(|| ScoreError::Unsupported(NO_PROMPT_LOGPROBS.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
enum ScoreError {
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Unreachable(String),
}

#[async_trait::async_trait]
impl Scorer for RemoteGenerator {
    async fn logprob(&self, context: &str, continuation: &str) -> anyhow::Result<f64> {
        Ok(self.score(context, continuation).await?)
    }
}

/// Mean log-probability of the tokens that end after `context_chars` and start before
/// `prompt_chars` (offsets count characters, as OpenAI's `text_offset` does). `None` when
/// the answer holds no log-probabilities for those tokens.
fn continuation_logprob(answer: &Value, context_chars: usize, prompt_chars: usize) -> Option<f64> {
    let logprobs = &answer["choices"][0]["logprobs"];
    let tokens = logprobs["tokens"].as_array()?;
    let offsets = logprobs["text_offset"].as_array()?;
    let values = logprobs["token_logprobs"].as_array()?;
    let mut sum = 0.0;
    let mut n = 0;
    for ((token, offset), value) in tokens.iter().zip(offsets).zip(values) {
        let start = offset.as_u64()? as usize;
        let end = start + token.as_str()?.chars().count();
        if end > context_chars && start < prompt_chars {
            sum += value.as_f64()?;
            n += 1;
        }
    }
    (n > 0).then(|| sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_continuations_tokens_count() {
        // "The sky is blue" echoed as 4 tokens, then one generated token.
        let answer = json!({"choices": [{"text": "The sky is blue.", "logprobs": {
            "tokens": ["The", " sky", " is", " blue", "."],
            "text_offset": [0, 3, 7, 10, 15],
            "token_logprobs": [null, -2.0, -1.0, -0.5, -3.0],
        }}]});
        assert_eq!(continuation_logprob(&answer, 10, 15), Some(-0.5));
        assert_eq!(continuation_logprob(&answer, 3, 15), Some((-2.0 - 1.0 - 0.5) / 3.0));
    }

    #[test]
    fn an_answer_without_prompt_logprobs_cannot_score() {
        let generated_only = json!({"choices": [{"text": ".", "logprobs": {
            "tokens": ["."], "text_offset": [15], "token_logprobs": [-3.0],
        }}]});
        assert_eq!(continuation_logprob(&generated_only, 10, 15), None);
        assert_eq!(continuation_logprob(&json!({"choices": [{"text": "."}]}), 10, 15), None);
    }
}
