//! Prompts: system message, numbered passages, recent turns and the question, fitted to the
//! context window. Templates live in `prompts/` (compiled in, overridable by path).

use std::path::Path;

use lore_plugins::Hit;

use crate::engine::Generator;

const SYSTEM: &str = include_str!("../../prompts/system.txt");
const CHAT: &str = include_str!("../../prompts/chat.txt");
const PLAIN: &str = include_str!("../../prompts/plain.txt");

/// Stop strings for the plain template: a base model would go on to invent the next question.
pub const PLAIN_STOPS: [&str; 2] = ["\nQuestion:", "\n\n\n"];

/// One earlier exchange in a conversation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Turn {
    pub question: String,
    pub answer: String,
}

/// Which template a bot uses.
#[derive(Debug, Clone)]
pub struct Template {
    pub system: String,
    /// The user message (chat models) or whole prompt (base models); `None` = the built-in
    /// for whatever the model supports.
    pub body: Option<String>,
}

impl Template {
    /// `name` is `default`/`chat`, `plain`, or a path to a template file.
    pub fn load(name: Option<&str>, system: Option<&str>, base: &Path) -> anyhow::Result<Self> {
        let body = match name {
            None | Some("default") => None,
            Some("chat") => Some(CHAT.to_string()),
            Some("plain") => Some(PLAIN.to_string()),
            Some(path) => {
                let p = base.join(path);
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| anyhow::anyhow!("prompt template {}: {e}", p.display()))?;
                if !text.contains("{question}") {
                    anyhow::bail!("prompt template {} has no {{question}} slot", p.display());
                }
                Some(text)
            }
        };
        Ok(Self { system: system.unwrap_or(SYSTEM).trim().to_string(), body })
    }
}

impl Default for Template {
    fn default() -> Self {
        Self { system: SYSTEM.trim().to_string(), body: None }
    }
}

/// A prompt ready for the generator, and what went into it.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub text: String,
    /// The passages that made it in, in prompt order ([1] first).
    pub passages: Vec<Hit>,
    pub turns_used: usize,
    pub stop: Vec<String>,
    pub tokens: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("the question is too long: {tokens} tokens, and at most {limit} fit in this model's context with room for an answer")]
    QuestionTooLong { tokens: usize, limit: usize },
}

/// Builds the prompt, dropping the oldest turns first and then the lowest-ranked passages
/// until it fits `context_tokens - max_answer_tokens`. The question is never cut.
pub fn build(
    generator: &Generator,
    template: &Template,
    question: &str,
    passages: &[Hit],
    history: &[Turn],
    max_answer_tokens: usize,
) -> Result<Prompt, PromptError> {
    let budget = generator.context_tokens().saturating_sub(max_answer_tokens);
    let mut n_passages = passages.len();
    let mut first_turn = 0;
    loop {
        let (text, stop) = render(generator, template, question, &passages[..n_passages], &history[first_turn..]);
        let tokens = generator.count_tokens(&text);
        if tokens <= budget {
            return Ok(Prompt {
                text,
                passages: passages[..n_passages].to_vec(),
                turns_used: history.len() - first_turn,
                stop,
                tokens,
            });
        }
        if first_turn < history.len() {
            first_turn += 1;
        } else if n_passages > 0 {
            n_passages -= 1;
        } else {
            return Err(PromptError::QuestionTooLong { tokens: generator.count_tokens(question), limit: budget.saturating_sub(tokens - generator.count_tokens(question)) });
        }
    }
}

/// Passages as `[n] text` blocks.
pub fn format_passages(passages: &[Hit]) -> String {
    if passages.is_empty() {
        return "(none)".into();
    }
    passages
        .iter()
        .enumerate()
        .map(|(i, h)| format!("[{}] {}", i + 1, h.chunk.text.trim()))
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn render(generator: &Generator, t: &Template, question: &str, passages: &[Hit], history: &[Turn]) -> (String, Vec<String>) {
    let passages_text = format_passages(passages);
    let chat_body = t.body.as_deref().unwrap_or(CHAT);
    if generator.has_chat_template() && !chat_body.contains("{system}") {
        let user = fill(chat_body, &[("passages", &passages_text), ("question", question)]);
        let mut messages: Vec<(&str, &str)> = vec![("system", &t.system)];
        for turn in history {
            messages.push(("user", &turn.question));
            messages.push(("assistant", &turn.answer));
        }
        messages.push(("user", &user));
        if let Some(text) = generator.render_chat(&messages) {
            return (text, vec![]);
        }
    }
    // Base models (and templates that ask for it) get the plain format.
    let body = t.body.as_deref().filter(|b| b.contains("{system}")).unwrap_or(PLAIN);
    let history_text: String = history
        .iter()
        .map(|turn| format!("Question: {}\nAnswer: {}\n\n", turn.question, turn.answer))
        .collect();
    let text = fill(
        body,
        &[("system", &t.system), ("passages", &passages_text), ("history", &history_text), ("question", question)],
    );
    (text.trim_end().to_string(), PLAIN_STOPS.iter().map(|s| s.to_string()).collect())
}

/// Replaces `{name}` slots in one pass (a slot's value is never re-scanned, so text in a
/// passage such as "{question}" stays as it is).
pub fn fill(template: &str, slots: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after.find('}').and_then(|close| {
            let name = &after[..close];
            slots.iter().find(|(n, _)| *n == name).map(|(_, v)| (close, *v))
        });
        match value {
            Some((close, v)) => {
                out.push_str(v);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::fill;

    #[test]
    fn slots_are_filled_once() {
        let out = fill("Q: {question} / {passages} / {unknown}", &[("question", "why {passages}?"), ("passages", "P")]);
        assert_eq!(out, "Q: why {passages}? / P / {unknown}");
    }
}
