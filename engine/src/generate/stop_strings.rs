//! Stop strings in a stream: text is sent as it comes, except what could still turn out to
//! be the start of a stop string, which is held back until it cannot.

/// Adds `text` to what was `held` back and takes out what may be sent now (possibly
/// nothing). `true` when a stop string was found: the text before it is sent, the rest
/// dropped, and the answer ends.
pub(super) fn release(held: &mut String, text: &str, stops: &[String]) -> (String, bool) {
    held.push_str(text);
    if let Some(at) = stops.iter().filter_map(|s| held.find(s.as_str())).min() {
        held.truncate(at);
        return (std::mem::take(held), true);
    }
    let keep = stops.iter().map(|s| longest_suffix_prefix(held, s)).max().unwrap_or(0);
    let rest = held.split_off(held.len() - keep);
    (std::mem::replace(held, rest), false)
}

/// Length in bytes of the longest suffix of `text` that is a proper prefix of `stop`
/// (always at a character boundary of `text`).
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    let max = stop.len().saturating_sub(1).min(text.len());
    (1..=max)
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && stop.starts_with(&text[text.len() - n..]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_a_possible_stop_string_start() {
        assert_eq!(longest_suffix_prefix("answer\nQues", "\nQuestion:"), 5);
        assert_eq!(longest_suffix_prefix("answer", "\nQuestion:"), 0);
        assert_eq!(longest_suffix_prefix("é", "x"), 0);
    }

    #[test]
    fn release() {
        fn check(name: &str, held: &str, text: &str, sent: &str, stopped: bool, still_held: &str) {
            let stops = ["\nQuestion:".to_string(), "###".to_string()];
            let mut held = held.to_string();
            let (out, stop) = super::release(&mut held, text, &stops);
            assert_eq!((out.as_str(), stop, held.as_str()), (sent, stopped, still_held), "{name}");
        }
        check("text with no stop string in sight goes", "", "Bees dance", "Bees dance", false, "");
        check("a possible start is held back", "", "Bees dance\nQue", "Bees dance", false, "\nQue");
        check("and sent once it cannot be one", "\nQue", "ens rule", "\nQueens rule", false, "");
        check("a completed stop string ends the answer", "\nQue", "stion: next", "", true, "");
        check("the text before it is sent", "done", " now###more", "done now", true, "");
        check("the earliest of several stop strings counts", "", "a\nQuestion: b###", "a", true, "");
        check("a lone # may start ###", "", "C#", "C", false, "#");
        let mut held = "kept".to_string();
        assert_eq!(super::release(&mut held, " all", &[]), ("kept all".to_string(), false), "no stop strings");
    }
}
