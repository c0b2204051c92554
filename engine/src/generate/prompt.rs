//! How prompts become tokens and back: control tokens are parsed in the template's own
//! text only, never in what a user, a passage or a remembered turn says.

use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use lore_core::{Part, PromptText};

/// Ordinary text as a prompt of its own (with the model's start token): control-token
/// spellings in it stay ordinary text.
pub(super) fn tokenize_text(model: &LlamaModel, text: &str) -> Vec<LlamaToken> {
    model.vocab().tokenize(text.as_bytes(), true, false)
}

/// The tokens `prompt` is read as: a decoder-only model gets its start token first; an
/// encoder reads the whole prompt followed by its end-of-text token, as it was trained.
pub(super) fn tokenize_prompt(model: &LlamaModel, prompt: &PromptText, encoder_decoder: bool) -> Vec<LlamaToken> {
    let vocab = model.vocab();
    if !encoder_decoder {
        // Piece by piece; the first piece gets the start token.
        let mut tokens = Vec::new();
        for (i, part) in prompt.parts().iter().enumerate() {
            let special = matches!(part, Part::Template(_));
            tokens.extend(vocab.tokenize(part.as_str().as_bytes(), i == 0, special));
        }
        return tokens;
    }
    let mut tokens: Vec<LlamaToken> = prompt
        .parts()
        .iter()
        .flat_map(|part| vocab.tokenize(part.as_str().as_bytes(), false, matches!(part, Part::Template(_))))
        .collect();
    tokens.push(vocab.eos());
    tokens
}

/// A prompt a client sent as token ids: control tokens become template parts, every other
/// run of tokens the text it spells. A leading start token is dropped, as reading the
/// prompt adds it. Ids outside the vocabulary are refused.
pub(super) fn prompt_from_token_ids(model: &LlamaModel, ids: &[i64]) -> Result<PromptText, String> {
    let vocab = model.vocab();
    let size = vocab.n_tokens();
    let mut tokens = Vec::with_capacity(ids.len());
    for &id in ids {
        match i32::try_from(id) {
            Ok(id) if (0..size).contains(&id) => tokens.push(LlamaToken(id)),
            _ => return Err(format!("token id {id} is not in the model's vocabulary of {size}")),
        }
    }
    if tokens.first() == Some(&vocab.bos()) && vocab.should_add_bos() {
        tokens.remove(0);
    }
    let mut prompt = PromptText::default();
    let mut text = Vec::new();
    for token in tokens {
        if vocab.is_control(token) {
            prompt.push_text(String::from_utf8_lossy(&std::mem::take(&mut text)));
            prompt.push_template(String::from_utf8_lossy(&vocab.token_to_piece(token, true, None)));
        } else {
            vocab.token_to_piece_into(token, &mut text, false, None);
        }
    }
    prompt.push_text(String::from_utf8_lossy(&text));
    Ok(prompt)
}

/// The model's chat template, when llama.cpp can apply it (one it cannot is as good as
/// none: the plain prompt is used then).
pub(super) fn usable_chat_template(model: &LlamaModel) -> Option<LlamaChatTemplate> {
    model.chat_template(None).ok().filter(|t| {
        let probe = [LlamaChatMessage::new("user".into(), "hi".into()).expect("no NUL")];
        model.apply_chat_template(t, &probe, true).is_ok()
    })
}

/// `messages` (role, content) in the chat template: the template is rendered around
/// placeholders, then each placeholder is replaced by its content as [`Part::Text`], so
/// only the template's own markers are special.
pub(super) fn render_chat(
    model: &LlamaModel,
    template: &LlamaChatTemplate,
    messages: &[(&str, &str)],
) -> Option<PromptText> {
    let msgs: Vec<LlamaChatMessage> = messages
        .iter()
        .enumerate()
        .map(|(i, (role, _))| LlamaChatMessage::new(role.to_string(), placeholder(i)).expect("no NUL"))
        .collect();
    let rendered = model.apply_chat_template(template, &msgs, true).ok()?;
    let mut prompt = PromptText::default();
    let mut rest = rendered.as_str();
    while let Some(start) = rest.find(PLACEHOLDER_OPEN) {
        let end = start + rest[start..].find(PLACEHOLDER_CLOSE)?;
        let index: usize = rest[start + PLACEHOLDER_OPEN.len_utf8()..end].parse().ok()?;
        prompt.push_template(&rest[..start]);
        prompt.push_text(messages.get(index)?.1.replace(['\0', PLACEHOLDER_OPEN, PLACEHOLDER_CLOSE], ""));
        rest = &rest[end + PLACEHOLDER_CLOSE.len_utf8()..];
    }
    prompt.push_template(rest);
    Some(prompt)
}

/// Marks where message `i` goes while a chat template is rendered (private-use
/// characters, removed from contents, so no text can fake one).
const PLACEHOLDER_OPEN: char = '\u{F8F0}';
const PLACEHOLDER_CLOSE: char = '\u{F8F1}';

fn placeholder(i: usize) -> String {
    format!("{PLACEHOLDER_OPEN}{i}{PLACEHOLDER_CLOSE}")
}
