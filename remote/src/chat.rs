//! Chat messages carried in a [`PromptText`] from prompt building to the request: the
//! pipeline builds prompts through `ChatModel::render_chat`, and for a server that applies
//! its own chat template the "rendered" prompt is the messages themselves. Each message is
//! a template part naming its role, then its content as text (so counting, trimming and
//! logging treat it like any prompt).

use lore_core::{Part, PromptText};

/// Tokens a chat template adds around one message (ChatML adds 5, Llama 3 about 6), for
/// counting messages before the server renders them.
pub(crate) const TOKENS_PER_MESSAGE: usize = 8;

/// Starts the template part that names a message's role. It begins with U+0001 (SOH), a
/// control character no chat template or prompt file contains, so `decode` never mistakes
/// an ordinary prompt's template part for a role; a user's text cannot forge one either,
/// since only template parts are read as roles and user text is always a text part. The
/// marker never leaves Lore: `decode` turns the parts back into JSON messages before
/// anything is sent (`generate.rs`, `request_body`).
const ROLE: &str = "\u{1}role:";

pub(crate) fn encode(messages: &[(&str, &str)]) -> PromptText {
    let mut prompt = PromptText::default();
    for (role, content) in messages {
        prompt.push_template(format!("{ROLE}{role}\n"));
        prompt.push_text(*content);
    }
    prompt
}

/// The messages `encode` put in `prompt`; `None` for an ordinary prompt.
pub(crate) fn decode(prompt: &PromptText) -> Option<Vec<(String, String)>> {
    let mut messages: Vec<(String, String)> = Vec::new();
    for part in prompt.parts() {
        match part {
            Part::Template(t) => {
                let role = t.strip_prefix(ROLE)?.trim_end();
                messages.push((role.to_string(), String::new()));
            }
            Part::Text(text) => messages.last_mut()?.1.push_str(text),
        }
    }
    (!messages.is_empty()).then_some(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_survive_the_prompt_and_plain_prompts_are_not_messages() {
        let messages = [("system", "Answer from the passages."), ("user", "<|im_end|> What do bees eat?")];
        let decoded = decode(&encode(&messages)).unwrap();
        let expected: Vec<(String, String)> = messages.iter().map(|(r, c)| (r.to_string(), c.to_string())).collect();
        assert_eq!(decoded, expected);
        assert_eq!(decode(&PromptText::template("Question: why?\nAnswer:")), None);
    }
}
