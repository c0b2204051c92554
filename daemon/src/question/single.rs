//! One generation outside a conversation: a question a passage answers (what
//! `generated_questions` stores as a search key and `lore synth` writes), the shortest
//! answer to a question from given passages (what `lore eval` scores and `lore synth`
//! pairs with its question), and whether a reply only says "I don't know". Ingest and the
//! tools share these, so the product path never imports a tool to get them.

use lore_core::{ChatModel, GenerateRequest, Hit, PromptText, Sampling};

use crate::question::answer_text::{clean_answer, normalize_answer};
use crate::question::prompt::{self, fill, Template};

/// Asks for a question a passage answers, with a `{passage}` slot.
const QUESTION_PROMPT: &str = include_str!("../../../prompts/synth.txt");

/// How long a reply to an instruction may be: a question, or a reworded one.
pub const INSTRUCTION_TOKENS: usize = 96;

/// A question `passage` answers, written by the generator from [`QUESTION_PROMPT`];
/// `None` when its reply does not read as one.
pub async fn question_about(
    model: &dyn ChatModel,
    passage: &str,
    sampling: Sampling,
) -> anyhow::Result<Option<String>> {
    let reply = instruct(model, &fill(QUESTION_PROMPT, &[("passage", passage)]), sampling).await?;
    let question = read_question(&reply);
    if question.is_none() {
        tracing::debug!(reply, "the reply is not a question");
    }
    Ok(question)
}

/// One reply of the generator to an instruction (the chat template when the model has
/// one, else the plain text and an empty line to stop at).
pub async fn instruct(model: &dyn ChatModel, instruction: &str, sampling: Sampling) -> anyhow::Result<String> {
    let (prompt, stop) = match model.render_chat(&[("user", instruction)]) {
        Some(prompt) => (prompt, vec![]),
        None => {
            let mut prompt = PromptText::default();
            prompt.push_text(instruction);
            prompt.push_template("\n");
            (prompt, vec!["\n\n".to_string()])
        }
    };
    let generation = model.generate(GenerateRequest {
        prompt,
        max_tokens: INSTRUCTION_TOKENS,
        stop,
        ignore_eos: false,
        sampling,
        lora: None,
    })?;
    Ok(generation.collect().await?.text)
}

/// The question in a reply: its first line (or the first after lines that introduce it,
/// ending in ":") without a "Question:" label or list number, or the quoted question
/// inside a wrapper such as `What is the answer to the question "…?"`. `None` unless it
/// ends in "?" and is more than a word or two.
pub fn read_question(reply: &str) -> Option<String> {
    let mut lines = reply.trim().lines().map(str::trim).filter(|l| !l.is_empty());
    let line = lines.find(|l| !l.ends_with(':'))?;
    let line = line.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.' || c == ')').trim();
    let line = line.strip_prefix("Question:").unwrap_or(line).trim().trim_matches('*').trim();
    let wrapped = line.to_lowercase().starts_with("what is the answer to");
    let quoted = line.split('"').rfind(|part| part.trim().ends_with('?')).map(str::trim);
    let question = match quoted {
        Some(q) if wrapped => q,
        _ => line,
    };
    let question = question.trim_matches(|c| c == '"' || c == '\'').trim();
    let answerable = question.ends_with('?') && question.split_whitespace().count() >= 3;
    let wrapper = question.to_lowercase().starts_with("what is the answer to");
    (answerable && !wrapper).then(|| question.to_string())
}

/// The model's answer to `question` from `passages` (none: closed book) the way `lore eval`
/// asks for one: its short-answer system message, the bots' prompt, the answer cleaned.
pub async fn short_answer(
    model: &dyn ChatModel,
    question: &str,
    passages: &[Hit],
    max_tokens: usize,
    sampling: Sampling,
    lora: Option<&lore_core::LoraAdapter>,
) -> anyhow::Result<String> {
    let template = Template::short_answer();
    let built = prompt::build(model, &template, question, passages, &[], max_tokens).await?;
    let generated = model
        .generate(GenerateRequest {
            prompt: built.text,
            max_tokens,
            stop: built.stop,
            ignore_eos: false,
            sampling,
            lora: lora.cloned(),
        })?
        .collect()
        .await?;
    Ok(clean_answer(&generated.text))
}

/// "I don't know", "I do not know the answer.", "Unknown" and the like.
pub fn says_dont_know(text: &str) -> bool {
    let n = normalize_answer(text);
    ["i dont know", "i do not know", "unknown", "not mentioned", "no answer", "אני לא יודע", "לא ידוע"]
        .iter()
        .any(|p| n.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_is_read_from_the_reply_or_not_at_all() {
        let q = |reply: &str| read_question(reply);
        assert_eq!(q("Question: Where do bees dance?\nAnswer: on the comb").as_deref(), Some("Where do bees dance?"));
        let wrapped = r#"Question: What is the answer to the question "Where was the Duchy of Normandy?""#;
        assert_eq!(q(wrapped).as_deref(), Some("Where was the Duchy of Normandy?"));
        assert_eq!(q("What is the answer to this question?"), None, "a wrapper alone");
        let word = r#"What is the origin of the English word "Norman"?"#;
        assert_eq!(q(word).as_deref(), Some(word), "quotes inside a question");
        assert_eq!(q("Bees?"), None, "too short");
        assert_eq!(q("The passage is about bees."), None);
        let introduced = "Here is a question that can be asked:\n\n1. Where do honeybees dance?";
        assert_eq!(q(introduced).as_deref(), Some("Where do honeybees dance?"));
    }

    #[test]
    fn dont_know_is_read_in_its_usual_spellings() {
        assert!(says_dont_know("I don't know."));
        assert!(!says_dont_know("In France"));
    }
}
