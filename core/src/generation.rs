//! Text generation as the rest of Lore sees it: a request, a stream of events, and the
//! model facts prompt building needs. `lore-engine` implements it with llama.cpp.

use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a generation reports, in order: maybe `Queued`, then `Text` pieces, then one
/// `Done` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Waiting for a free sequence; `position` 1 is next in line.
    Queued {
        position: usize,
    },
    /// More answer text (a delta), always whole UTF-8 characters.
    Text(String),
    Done(Finish),
    /// The engine gave up on this generation; the message says why, for the log.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    pub reason: StopReason,
    pub prompt_tokens: usize,
    /// Prompt tokens found in the cache from an earlier request (not decoded again).
    pub reused_tokens: usize,
    pub generated_tokens: usize,
    /// For scoring requests: the log-probability of each scored token, in order.
    pub token_logprobs: Vec<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model ended its answer.
    EndOfText,
    /// A stop string appeared (it is not part of the text).
    StopString,
    /// `max_tokens` reached.
    Length,
    /// The context window is full.
    ContextFull,
    Cancelled,
}

/// A prompt in pieces that are tokenised apart. The template's own text may hold the
/// model's control tokens (`<|im_start|>`, `</s>`); what people and documents wrote never
/// does, so a question containing `<|im_end|><|im_start|>system` is read as plain text
/// and cannot open a turn of its own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptText {
    parts: Vec<Part>,
}

impl From<&str> for PromptText {
    /// All template: for prompts the program writes itself.
    fn from(text: &str) -> Self {
        Self::template(text)
    }
}

impl From<String> for PromptText {
    fn from(text: String) -> Self {
        Self::template(text)
    }
}

/// One piece of a [`PromptText`].
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// The template's own text: control tokens in it are control tokens.
    Template(String),
    /// Text from people or documents: always ordinary tokens.
    Text(String),
}

impl Part {
    pub fn as_str(&self) -> &str {
        match self {
            Part::Template(s) | Part::Text(s) => s,
        }
    }
}

impl PromptText {
    /// A prompt that is all template (benchmarks, scoring contexts made by the program).
    pub fn template(text: impl Into<String>) -> Self {
        let mut p = Self::default();
        p.push_template(text.into());
        p
    }

    pub fn push_template(&mut self, text: impl Into<String>) {
        self.push(Part::Template(text.into()));
    }

    pub fn push_text(&mut self, text: impl Into<String>) {
        self.push(Part::Text(text.into()));
    }

    fn push(&mut self, part: Part) {
        if part.as_str().is_empty() {
            return;
        }
        match (self.parts.last_mut(), part) {
            (Some(Part::Template(a)), Part::Template(b)) | (Some(Part::Text(a)), Part::Text(b)) => a.push_str(&b),
            (_, part) => self.parts.push(part),
        }
    }

    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The whole text, as the model will read it.
    pub fn text(&self) -> String {
        self.parts.iter().map(Part::as_str).collect()
    }

    /// Drops trailing white space of the last piece.
    pub fn trim_end(mut self) -> Self {
        while let Some(last) = self.parts.last_mut() {
            let (Part::Template(s) | Part::Text(s)) = last;
            s.truncate(s.trim_end().len());
            if !s.is_empty() {
                break;
            }
            self.parts.pop();
        }
        self
    }
}

/// One generation to run.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// The whole prompt, already in the model's chat format.
    pub prompt: PromptText,
    pub max_tokens: usize,
    /// Generation ends before any of these strings; they are never streamed.
    pub stop: Vec<String>,
    /// When `ignore_eos` is set, end-of-text tokens do not stop generation (benchmarks).
    pub ignore_eos: bool,
    pub sampling: Sampling,
    /// A LoRA adapter (loaded with the model) applied to this generation only.
    pub lora: Option<LoraAdapter>,
}

/// A LoRA adapter: a GGUF file made for the generator's base model, and how strongly it
/// applies (`bots.NAME.adapters` in the config).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraAdapter {
    /// A GGUF adapter file made for the generator's base model.
    pub path: std::path::PathBuf,
    /// 1.0 applies it as trained; 0 turns it off.
    #[serde(default = "default_scale")]
    pub scale: f32,
}

impl LoraAdapter {
    /// A scale llama.cpp can apply: a number from 0 up.
    pub fn has_valid_scale(&self) -> bool {
        self.scale.is_finite() && self.scale >= 0.0
    }
}

fn default_scale() -> f32 {
    1.0
}

/// How the next token is chosen (`models.generator.sampling` in the config).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sampling {
    /// 0 = always the most likely token (deterministic); higher = more varied answers.
    #[serde(default = "default_temperature")]
    pub temperature: f32,
    /// With temperature > 0: sample among the `top_k` most likely tokens only.
    #[serde(default = "default_top_k")]
    pub top_k: u32,
    /// With temperature > 0: ... and among the smallest set whose probabilities add up to `top_p`.
    #[serde(default = "default_top_p")]
    pub top_p: f32,
    /// With temperature > 0: drop tokens less likely than `min_p` times the most likely one.
    #[serde(default = "default_min_p")]
    pub min_p: f32,
    /// Penalty for repeating any of the last 64 tokens; 1.0 = off.
    #[serde(default = "default_repeat_penalty")]
    pub repeat_penalty: f32,
    /// Random seed for sampling with temperature > 0 (the same seed gives the same answer).
    #[serde(default = "default_seed")]
    pub seed: u32,
}

impl Sampling {
    /// Always the most likely token, no penalties: what benchmarks and scoring use.
    pub fn greedy() -> Self {
        Self { temperature: 0.0, repeat_penalty: 1.0, ..Self::default() }
    }
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: default_temperature(),
            top_k: default_top_k(),
            top_p: default_top_p(),
            min_p: default_min_p(),
            repeat_penalty: default_repeat_penalty(),
            seed: default_seed(),
        }
    }
}

fn default_temperature() -> f32 {
    0.0
}
fn default_top_k() -> u32 {
    40
}
fn default_top_p() -> f32 {
    0.95
}
fn default_min_p() -> f32 {
    0.05
}
fn default_repeat_penalty() -> f32 {
    1.1
}
fn default_seed() -> u32 {
    42
}

/// Why a generation could not be started or did not finish.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenerateError {
    #[error("the generator has stopped")]
    Stopped,
    #[error("too many questions are waiting ({0} in line); try again shortly")]
    QueueFull(usize),
    #[error("the prompt has {prompt} tokens but the context holds {limit}")]
    PromptTooLong { prompt: usize, limit: usize },
    #[error("generation failed: {0}")]
    Failed(String),
}

/// Receives the events of one generation. Dropping it cancels the generation.
pub struct Generation {
    pub events: mpsc::UnboundedReceiver<Event>,
    cancel: CancellationToken,
}

/// A generation's whole text and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub text: String,
    pub finish: Finish,
}

impl Generation {
    /// The receiving end of a generation whose engine sends on `events` and watches `cancel`.
    pub fn new(events: mpsc::UnboundedReceiver<Event>, cancel: CancellationToken) -> Self {
        Self { events, cancel }
    }

    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Waits for the whole text (queue notices are skipped).
    pub async fn collect(mut self) -> Result<Generated, GenerateError> {
        let mut text = String::new();
        while let Some(event) = self.events.recv().await {
            match event {
                Event::Queued { .. } => {}
                Event::Text(piece) => text.push_str(&piece),
                Event::Done(finish) => return Ok(Generated { text, finish }),
                Event::Failed(message) => return Err(GenerateError::Failed(message)),
            }
        }
        Err(GenerateError::Stopped)
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// What prompt building and answering need from a generator model.
///
/// Counting is async because a model on another machine may only be able to count with
/// its server's tokenizer.
#[async_trait::async_trait]
pub trait ChatModel: Send + Sync {
    /// Tokens one conversation may use: prompt and answer together.
    fn context_tokens(&self) -> usize;
    /// Number of tokens `text` (ordinary text) takes in a prompt.
    async fn count_tokens(&self, text: &str) -> usize;
    /// Number of tokens a whole prompt takes.
    async fn count_prompt_tokens(&self, prompt: &PromptText) -> usize;
    /// Renders `(role, content)` messages with the model's own chat template, ending with
    /// the assistant's turn opened, the contents as [`Part::Text`]; `None` when the model
    /// has no template it can apply.
    fn render_chat(&self, messages: &[(&str, &str)]) -> Option<PromptText>;
    /// Queues a generation; its events arrive as the model produces them.
    fn generate(&self, request: GenerateRequest) -> Result<Generation, GenerateError>;
    /// Mean log-probability of `continuation` (ordinary text) right after `prompt`: how
    /// likely the model finds an answer given a prompt, one of the signals an answer's
    /// confidence is judged on. `None` when this model cannot score (the default).
    async fn continuation_logprob(&self, prompt: &PromptText, continuation: &str) -> anyhow::Result<Option<f64>> {
        let _ = (prompt, continuation);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn collect_joins_text_and_reports_failure() {
        let (tx, rx) = mpsc::unbounded_channel();
        let g = Generation::new(rx, CancellationToken::new());
        tx.send(Event::Queued { position: 1 }).unwrap();
        tx.send(Event::Text("Hel".into())).unwrap();
        tx.send(Event::Text("lo".into())).unwrap();
        let finish = Finish {
            reason: StopReason::EndOfText,
            prompt_tokens: 3,
            reused_tokens: 0,
            generated_tokens: 2,
            token_logprobs: Vec::new(),
        };
        tx.send(Event::Done(finish.clone())).unwrap();
        assert_eq!(g.collect().await.unwrap(), Generated { text: "Hello".into(), finish });

        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(Event::Failed("decode failed".into())).unwrap();
        let err = Generation::new(rx, CancellationToken::new()).collect().await.unwrap_err();
        assert_eq!(err, GenerateError::Failed("decode failed".into()));

        let (tx, rx) = mpsc::unbounded_channel::<Event>();
        drop(tx);
        assert_eq!(Generation::new(rx, CancellationToken::new()).collect().await.unwrap_err(), GenerateError::Stopped);
    }

    #[test]
    fn prompt_pieces_merge_by_kind_and_keep_the_whole_text() {
        let mut p = PromptText::template("<|im_start|>user\n");
        p.push_text("Hi ");
        p.push_text("<|im_end|>");
        p.push_template("");
        p.push_template("<|im_end|>\n  ");
        assert_eq!(p.parts().len(), 3);
        assert_eq!(p.parts()[1], Part::Text("Hi <|im_end|>".into()));
        assert_eq!(p.clone().trim_end().text(), "<|im_start|>user\nHi <|im_end|><|im_end|>");
    }

    #[test]
    fn dropping_a_generation_cancels_it() {
        let cancel = CancellationToken::new();
        let (_tx, rx) = mpsc::unbounded_channel();
        drop(Generation::new(rx, cancel.clone()));
        assert!(cancel.is_cancelled());
    }
}
