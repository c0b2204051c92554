//! Scoring on a pool, for the `llm` reranker: how likely the model finds a question after
//! a passage, read from the log-probabilities a server returns for the prompt itself
//! (`echo` with `logprobs` on `/v1/completions`). vLLM and Lore return them; llama.cpp's
//! server and Ollama give log-probabilities of generated tokens only, which cannot score a
//! given text, so there the reranker cannot work and `lore check` says so.

use lore_core::Scorer;
use serde_json::{json, Value};

use crate::error::RemoteError;
use crate::generate::RemoteGenerator;
use crate::pool::Route;

/// Why a pool cannot score (the servers' own words follow it).
pub const NO_PROMPT_LOGPROBS: &str =
    "the server returns no log-probabilities for the prompt (`echo` with `logprobs` on /v1/completions; vLLM and Lore do, llama.cpp's server and Ollama do not)";

impl RemoteGenerator {
    /// Scores a short text once, to tell whether the `llm` reranker can work here:
    /// [`RemoteError::NoScoring`] when it cannot; any other error leaves it unknown until a
    /// server answers.
    pub async fn check_scoring(&self) -> Result<(), RemoteError> {
        self.score("The sky is", " blue").await.map(drop)
    }

    async fn score(&self, context: &str, continuation: &str) -> Result<f64, RemoteError> {
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
        let answer = self.inner.pool.post_json(Route::Api("completions"), &body).await.map_err(|e| {
            if e.is_callers_fault() {
                RemoteError::NoScoring { refusal: Some(Box::new(e)) }
            } else {
                e
            }
        })?;
        continuation_logprob(&answer, context.chars().count(), prompt.chars().count())
            .ok_or(RemoteError::NoScoring { refusal: None })
    }
}

#[async_trait::async_trait]
impl Scorer for RemoteGenerator {
    async fn logprob(&self, context: &str, continuation: &str) -> anyhow::Result<f64> {
        Ok(self.score(context, continuation).await?)
    }
}

/// Mean log-probability of the continuation's tokens: those of the echoed prompt (the
/// first `usage.prompt_tokens`; the rest were generated) that end after `context_chars`.
/// Offsets count characters, as OpenAI's `text_offset` does, but servers echo a start
/// token ("<s>") or a leading space the prompt did not have, so positions are taken from
/// the end of the echoed prompt, which is the end of the prompt sent. `None` when the
/// answer holds no log-probabilities for those tokens.
fn continuation_logprob(answer: &Value, context_chars: usize, prompt_chars: usize) -> Option<f64> {
    let logprobs = &answer["choices"][0]["logprobs"];
    let tokens = logprobs["tokens"].as_array()?;
    let offsets = logprobs["text_offset"].as_array()?;
    let values = logprobs["token_logprobs"].as_array()?;
    // Without `usage`, the prompt's tokens are those that start inside it.
    let starting_inside =
        offsets.iter().take_while(|o| o.as_u64().is_some_and(|o| (o as usize) < prompt_chars)).count();
    let echoed = answer["usage"]["prompt_tokens"].as_u64().map_or(starting_inside, |n| n as usize).min(tokens.len());
    let ends: Vec<usize> = tokens[..echoed]
        .iter()
        .zip(offsets)
        .map(|(t, o)| Some(o.as_u64()? as usize + t.as_str()?.chars().count()))
        .collect::<Option<_>>()?;
    let shift = ends.last()?.checked_sub(prompt_chars)?;
    let mut sum = 0.0;
    let mut n = 0;
    for (end, value) in ends.iter().zip(values) {
        if end - shift.min(*end) > context_chars {
            sum += value.as_f64()?;
            n += 1;
        }
    }
    (n > 0).then(|| sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{self, http, Fake};

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
    fn an_echoed_start_token_or_leading_space_does_not_shift_the_continuation() {
        // vLLM echoes "<s>" first (no log-probability); SentencePiece pieces start with a
        // space the prompt did not have. One token generated after the prompt.
        let answer = json!({"usage": {"prompt_tokens": 5}, "choices": [{"logprobs": {
            "tokens": ["<s>", " The", " sky", " is", " blue", "."],
            "text_offset": [0, 3, 7, 11, 14, 19],
            "token_logprobs": [null, -4.0, -2.0, -1.0, -0.5, -3.0],
        }}]});
        // "The sky is" + " blue": 10 and 15 characters.
        assert_eq!(continuation_logprob(&answer, 10, 15), Some(-0.5));
    }

    #[test]
    fn an_answer_without_prompt_logprobs_cannot_score() {
        let generated_only = json!({"choices": [{"text": ".", "logprobs": {
            "tokens": ["."], "text_offset": [15], "token_logprobs": [-3.0],
        }}]});
        assert_eq!(continuation_logprob(&generated_only, 10, 15), None);
        assert_eq!(continuation_logprob(&json!({"choices": [{"text": "."}]}), 10, 15), None);
    }

    #[tokio::test]
    async fn servers_without_prompt_logprobs_cannot_score_and_busy_ones_leave_it_unknown() {
        let generated_only = Fake::start(http("200 OK", r#"{"choices": [{"text": "."}]}"#)).await;
        let error = fake::generator(vec![generated_only.url]).check_scoring().await.unwrap_err();
        assert!(matches!(error, RemoteError::NoScoring { refusal: None }), "{error}");

        let llama = Fake::start(http("400 Bad Request", "Only no echo is supported")).await;
        let error = fake::generator(vec![llama.url]).check_scoring().await.unwrap_err();
        let RemoteError::NoScoring { refusal: Some(refusal) } = &error else { panic!("{error}") };
        assert!(matches!(**refusal, RemoteError::Refused { status: 400, .. }), "{error}");
        assert!(error.to_string().ends_with("HTTP 400: Only no echo is supported"), "{error}");

        let busy = Fake::start(http("429 Too Many Requests", "slow down")).await;
        let error = fake::generator(vec![busy.url]).check_scoring().await.unwrap_err();
        assert!(matches!(error, RemoteError::Refused { status: 429, .. }), "{error}");
    }
}
