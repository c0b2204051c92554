//! Token counts for a model that runs elsewhere. Prompts are fitted to the context window
//! and chunks to the embedder's input by counting tokens, and the model's tokenizer is on
//! the server. In order of preference:
//!
//! 1. a tokenizer file the config names (`tokenizer.json`, as published with the model):
//!    exact, and needs no round trip;
//! 2. the server's `POST /tokenize` (vLLM, llama.cpp's server, TGI, Lore): exact, one
//!    round trip per count; asked once, and not again if the server lacks it;
//! 3. an estimate of one token per three bytes, which errs towards prompts that fit.
//!
//! Counts that must be synchronous (chunking at ingest) use 1 or 3.

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};

use lore_core::{Part, PromptText};
use serde_json::{json, Value};
use tokenizers::Encoding;

use crate::error::RemoteError;
use crate::pool::{Pool, Route};

/// How counts are made, for `lore check` and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountedBy {
    TokenizerFile,
    /// The server's `/tokenize`; until the first count, whether it has one is unknown.
    Server,
    Estimate,
}

/// Whether the servers have a tokenize route.
const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;

pub(crate) struct Tokens {
    file: Option<tokenizers::Tokenizer>,
    /// The same tokenizer reading special-token spellings as ordinary text, for what people
    /// and documents wrote (see `special.rs`).
    plain: Option<tokenizers::Tokenizer>,
    /// Ask the servers (false for an embedder pool: its counts are synchronous).
    ask_server: bool,
    server: AtomicU8,
}

impl Tokens {
    pub(crate) fn new(file: Option<&Path>, ask_server: bool) -> Result<Self, RemoteError> {
        let file = file
            .map(|path| {
                let invalid =
                    |e: tokenizers::Error| RemoteError::Tokenizer { path: path.into(), reason: e.to_string() };
                let mut tokenizer = tokenizers::Tokenizer::from_file(path).map_err(invalid)?;
                // Published files often pad or cut to a training length: counts need neither.
                tokenizer.with_padding(None);
                tokenizer.with_truncation(None).map_err(invalid)?;
                Ok::<_, RemoteError>(tokenizer)
            })
            .transpose()?;
        let plain = file.clone().map(|mut tokenizer| {
            tokenizer.set_encode_special_tokens(true);
            tokenizer
        });
        Ok(Self { file, plain, ask_server, server: AtomicU8::new(UNKNOWN) })
    }

    pub(crate) fn counted_by(&self) -> CountedBy {
        match (&self.file, self.ask_server, self.server.load(Ordering::SeqCst)) {
            (Some(_), _, _) => CountedBy::TokenizerFile,
            (None, true, UNKNOWN | YES) => CountedBy::Server,
            _ => CountedBy::Estimate,
        }
    }

    /// The tokenizer file's count, else the estimate.
    pub(crate) fn count_here(&self, text: &str) -> usize {
        match &self.file {
            Some(tokenizer) => tokenizer.encode(text, false).map(|e| e.len()).unwrap_or_else(|_| estimate(text)),
            None => estimate(text),
        }
    }

    /// `prompt` as token ids, when a tokenizer file is configured: template parts with their
    /// special tokens, text parts as ordinary text, then what the tokenizer adds around a
    /// whole text (a start token, for the models that want one). `None` without a file, or
    /// when the tokenizer fails (the caller then sends the prompt as text).
    pub(crate) fn prompt_ids(&self, prompt: &PromptText) -> Option<Vec<u32>> {
        let (file, plain) = (self.file.as_ref()?, self.plain.as_ref()?);
        let parts: Result<Vec<_>, _> = prompt
            .parts()
            .iter()
            .map(|part| match part {
                Part::Template(text) => file.encode(text.as_str(), false),
                Part::Text(text) => plain.encode(text.as_str(), false),
            })
            .collect();
        let whole = parts.and_then(|parts| file.post_process(Encoding::merge(parts, false), None, true));
        match whole {
            Ok(encoding) => Some(encoding.get_ids().to_vec()),
            Err(error) => {
                tracing::warn!(%error, "the tokenizer file failed on a prompt; sending it as text");
                None
            }
        }
    }

    /// The best count available (see the module).
    pub(crate) async fn count(&self, pool: &Pool, model: &str, text: &str) -> usize {
        if self.counted_by() != CountedBy::Server {
            return self.count_here(text);
        }
        // The vLLM (`prompt`), llama.cpp (`content`) and TGI (`inputs`) spellings at once:
        // each server reads its own and ignores the others.
        let body = json!({
            "model": model,
            "prompt": text,
            "content": text,
            "inputs": text,
            "add_special_tokens": false,
            "add_special": false,
        });
        match pool.post_json(Route::Root("tokenize"), &body).await {
            Ok(answer) => match read_count(&answer) {
                Some(n) => {
                    self.server.store(YES, Ordering::SeqCst);
                    n
                }
                None => self.no_server(format!("unexpected answer {answer}"), text),
            },
            // No such route.
            Err(why @ RemoteError::Refused { status: 404 | 405, .. }) => self.no_server(why, text),
            // Other refusals (a key, a rate) may pass next time; servers down for now:
            // estimate this once and ask again next time.
            Err(_) => estimate(text),
        }
    }

    fn no_server(&self, why: impl std::fmt::Display, text: &str) -> usize {
        if self.server.swap(NO, Ordering::SeqCst) != NO {
            tracing::warn!(
                %why,
                "the engine servers have no /tokenize: prompt token counts are estimated (name a `tokenizer` file for exact counts)"
            );
        }
        estimate(text)
    }
}

/// `{"count": n}` (vLLM), `{"tokens": [...]}` (llama.cpp, Lore) or `[...]` (TGI).
fn read_count(answer: &Value) -> Option<usize> {
    if let Some(n) = answer.get("count").and_then(Value::as_u64) {
        return Some(n as usize);
    }
    answer.get("tokens").unwrap_or(answer).as_array().map(Vec::len)
}

/// About four bytes of English per token for the tokenizers in use, so counting one per
/// three bytes errs towards prompts that fit.
pub(crate) fn estimate(text: &str) -> usize {
    text.len().div_ceil(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_err_on_the_long_side() {
        // "How do bees dance?" is 6 tokens for GPT-2-style tokenizers.
        assert!(estimate("How do bees dance?") >= 6);
        assert_eq!(estimate(""), 0);
    }

    #[test]
    fn the_three_servers_answers_are_read() {
        assert_eq!(read_count(&json!({"count": 3, "tokens": [1, 2, 3], "max_model_len": 2048})), Some(3));
        assert_eq!(read_count(&json!({"tokens": [5, 6]})), Some(2));
        assert_eq!(read_count(&json!([{"id": 1}, {"id": 2}, {"id": 3}, {"id": 4}])), Some(4));
        assert_eq!(read_count(&json!({"detail": "Not Found"})), None);
    }

    #[test]
    fn a_tokenizer_file_that_is_missing_or_not_a_tokenizer_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let garbled = dir.path().join("tokenizer.json");
        std::fs::write(&garbled, "{\"model\": 3}").unwrap();
        for path in [missing, garbled] {
            let error = Tokens::new(Some(&path), true).err().expect("refused");
            assert!(matches!(&error, RemoteError::Tokenizer { path: p, .. } if *p == path), "{error}");
            assert!(error.to_string().starts_with(&format!("cannot read the tokenizer file {}: ", path.display())));
        }
    }
}
