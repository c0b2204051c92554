//! Deterministic stand-ins for the models, for tests that must run without model files.
//! They are simple but honest: texts that share words get similar
//! vectors and higher scores, so ranking and abstention logic can be checked.

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    ChatModel, Embedder, Event, Finish, GenerateError, GenerateRequest, Generation, PairScorer, PromptText, Scorer,
    StopReason,
};

/// Lower-cased words (letters and digits of any script).
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf29ce484222325, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// A bag-of-words embedder: each word adds to one of `dim` buckets; vectors are unit length.
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    pub dim: usize,
}

impl Default for HashEmbedder {
    fn default() -> Self {
        Self { dim: 64 }
    }
}

impl HashEmbedder {
    pub fn vector(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0.0f32; self.dim];
        for w in words(text) {
            v[(fnv1a(&w) % self.dim as u64) as usize] += 1.0;
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

#[async_trait]
impl Embedder for HashEmbedder {
    fn dim(&self) -> usize {
        self.dim
    }

    fn count_tokens(&self, text: &str) -> usize {
        text.split_whitespace().count()
    }

    fn max_tokens(&self) -> usize {
        512
    }

    async fn embed(&self, texts: &[String]) -> anyhow::Result<Vec<Vec<f32>>> {
        Ok(texts.iter().map(|t| self.vector(t)).collect())
    }
}

/// Share of the words of `b` that also appear in `a`.
fn overlap(a: &str, b: &str) -> f32 {
    let a = words(a);
    let b = words(b);
    if b.is_empty() {
        return 0.0;
    }
    b.iter().filter(|w| a.contains(w)).count() as f32 / b.len() as f32
}

/// Scores by word overlap: a continuation whose words the context contains is likely.
#[derive(Debug, Clone, Default)]
pub struct OverlapScorer;

#[async_trait]
impl Scorer for OverlapScorer {
    async fn logprob(&self, context: &str, continuation: &str) -> anyhow::Result<f64> {
        Ok((overlap(context, continuation) as f64 + 1e-3).ln())
    }
}

#[async_trait]
impl PairScorer for OverlapScorer {
    async fn score_pairs(&self, question: &str, passages: &[String]) -> anyhow::Result<Vec<f32>> {
        Ok(passages.iter().map(|p| overlap(p, question)).collect())
    }
}

/// A chat model whose tokens are words and whose answer repeats a fixed text, word by
/// word: enough for prompt fitting and answer streaming, without llama.cpp.
#[derive(Debug, Clone)]
pub struct EchoModel {
    pub context_tokens: usize,
    /// Whether it has a chat template (`render_chat` gives `role: content` lines).
    pub chat_template: bool,
    /// What every generation answers.
    pub answer: String,
}

impl EchoModel {
    pub fn new(context_tokens: usize, answer: &str) -> Self {
        Self { context_tokens, chat_template: true, answer: answer.to_string() }
    }
}

impl EchoModel {
    fn words(text: &str) -> usize {
        text.split_whitespace().count()
    }
}

#[async_trait::async_trait]
impl ChatModel for EchoModel {
    fn context_tokens(&self) -> usize {
        self.context_tokens
    }

    async fn count_tokens(&self, text: &str) -> usize {
        Self::words(text)
    }

    async fn count_prompt_tokens(&self, prompt: &PromptText) -> usize {
        Self::words(&prompt.text())
    }

    fn render_chat(&self, messages: &[(&str, &str)]) -> Option<PromptText> {
        if !self.chat_template {
            return None;
        }
        let mut p = PromptText::default();
        for (role, content) in messages {
            p.push_template(format!("<|{role}|>\n"));
            p.push_text(*content);
            p.push_template("<|end|>\n");
        }
        p.push_template("<|assistant|>\n");
        Some(p)
    }

    fn generate(&self, request: GenerateRequest) -> Result<Generation, GenerateError> {
        let prompt_tokens = Self::words(&request.prompt.text());
        if prompt_tokens + 1 > self.context_tokens {
            return Err(GenerateError::PromptTooLong { prompt: prompt_tokens, limit: self.context_tokens });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let pieces: Vec<&str> = self.answer.split_inclusive(' ').take(request.max_tokens).collect();
        for piece in &pieces {
            let _ = tx.send(Event::Text(piece.to_string()));
        }
        let reason = if pieces.len() == request.max_tokens { StopReason::Length } else { StopReason::EndOfText };
        let _ = tx.send(Event::Done(Finish {
            reason,
            prompt_tokens,
            reused_tokens: 0,
            generated_tokens: pieces.len(),
            token_logprobs: Vec::new(),
        }));
        Ok(Generation::new(rx, CancellationToken::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cosine;

    #[test]
    fn texts_that_share_words_are_closer() {
        let e = HashEmbedder::default();
        let q = e.vector("What do bees collect?");
        assert!(cosine(&q, &e.vector("Bees collect nectar.")) > cosine(&q, &e.vector("Drones mate with queens.")));
        assert!((cosine(&q, &q) - 1.0).abs() < 1e-5);
        assert!(e.vector("").iter().all(|&x| x == 0.0));
    }
}
