//! Text helpers shared by the adapters: splitting at a platform's length limit.

/// Splits `text` into pieces of at most `limit` characters (Unicode scalar values), preferring
/// paragraph, line and word boundaries, never cutting a character, and keeping fenced code
/// blocks balanced: a piece that cuts a ``` block closes it and the next piece reopens it.
pub fn split_message(text: &str, limit: usize) -> Vec<String> {
    assert!(limit >= 16, "split limit too small");
    let mut pieces = Vec::new();
    let mut rest = text.trim_end().to_string();
    // Reserve room for the fence we may have to add at both ends.
    const FENCE: &str = "```";
    while rest.chars().count() > limit {
        let budget = limit - (FENCE.len() + 1) * 2;
        let cut = best_cut(&rest, budget);
        let (head, tail) = rest.split_at(cut);
        let mut head = head.trim_end().to_string();
        let mut tail = tail.trim_start_matches([' ', '\n']).to_string();
        if head.matches(FENCE).count() % 2 == 1 {
            head.push('\n');
            head.push_str(FENCE);
            tail = format!("{FENCE}\n{tail}");
        }
        pieces.push(head);
        rest = tail;
    }
    if !rest.is_empty() || pieces.is_empty() {
        pieces.push(rest);
    }
    pieces
}

/// Byte offset of the best place to cut within the first `budget` characters.
fn best_cut(text: &str, budget: usize) -> usize {
    let hard = text.char_indices().nth(budget).map_or(text.len(), |(i, _)| i);
    let window = &text[..hard];
    for sep in ["\n\n", "\n", " "] {
        if let Some(i) = window.rfind(sep) {
            // Only take a boundary that keeps at least half the budget, else pieces get tiny.
            if window[..i].chars().count() >= budget / 2 {
                return i + sep.len();
            }
        }
    }
    hard
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_piece() {
        assert_eq!(split_message("hello", 2000), vec!["hello"]);
    }

    #[test]
    fn splits_at_words_and_respects_limit() {
        let text = "word ".repeat(1000);
        let pieces = split_message(&text, 2000);
        assert!(pieces.len() >= 3);
        for p in &pieces {
            assert!(p.chars().count() <= 2000);
            assert!(!p.starts_with(' ') && !p.ends_with(' '));
            assert!(p.split(' ').all(|w| w == "word"), "a word was cut: {p:?}");
        }
    }

    #[test]
    fn never_cuts_a_multibyte_character() {
        let text = "é".repeat(5000);
        let pieces = split_message(&text, 2000);
        assert_eq!(pieces.concat(), text);
        assert!(pieces.iter().all(|p| p.chars().count() <= 2000));
    }

    #[test]
    fn code_blocks_stay_balanced() {
        let text = format!("intro\n```\n{}```\nend", "let x = 1;\n".repeat(400));
        let pieces = split_message(&text, 2000);
        assert!(pieces.len() > 1);
        for p in &pieces {
            assert_eq!(p.matches("```").count() % 2, 0, "unbalanced fence in {p:?}");
            assert!(p.chars().count() <= 2000);
        }
    }
}
