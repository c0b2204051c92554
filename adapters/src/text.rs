//! Helpers shared by the adapters: splitting at a platform's length limit, escaping user and
//! model text for Discord markdown and Telegram HTML.

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
    let mut hard = text.char_indices().nth(budget).map_or(text.len(), |(i, _)| i);
    // A hard cut must not separate an escaping backslash from the character it escapes.
    if hard < text.len() && text[..hard].ends_with('\\') {
        hard -= 1;
    }
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

/// Escapes Discord markdown in user or model text so it shows as typed: outside balanced
/// fenced code blocks (kept as code), markdown characters get a backslash and `@everyone` /
/// `@here` are broken with a zero-width space. An unbalanced fence is shown literally.
pub fn escape_discord(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for segment in fenced_segments(text) {
        match segment {
            Segment::Code(code) => {
                out.push_str("```");
                out.push_str(code);
                out.push_str("```");
            }
            Segment::Text(plain) => escape_discord_plain(plain, &mut out),
        }
    }
    out
}

fn escape_discord_plain(text: &str, out: &mut String) {
    let mut at_line_start = true;
    for c in neutralise_mentions(text).chars() {
        match c {
            '\\' | '*' | '_' | '~' | '`' | '|' | '[' | ']' | '<' => out.push('\\'),
            '#' | '>' | '-' if at_line_start => out.push('\\'),
            _ => {}
        }
        out.push(c);
        at_line_start = c == '\n' || (at_line_start && c == ' ');
    }
}

/// Breaks `@everyone` and `@here` with a zero-width space so they can never ping, whatever
/// the platform's mention settings.
pub fn neutralise_mentions(text: &str) -> String {
    text.replace("@everyone", "@\u{200B}everyone").replace("@here", "@\u{200B}here")
}

/// Escapes `&`, `<` and `>` for Telegram's HTML parse mode.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            _ => out.push(c),
        }
    }
    out
}

/// Renders user or model text as Telegram HTML: everything escaped, balanced ``` fenced
/// blocks shown as `<pre>` (a language tag on the fence line is dropped). The visible
/// length equals the text's length minus the fences, so split before rendering.
pub fn telegram_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for segment in fenced_segments(text) {
        match segment {
            Segment::Code(code) => {
                let code = match code.split_once('\n') {
                    Some((lang, rest)) if !lang.contains(char::is_whitespace) => rest,
                    _ => code,
                };
                out.push_str("<pre>");
                out.push_str(&escape_html(code.trim_end_matches('\n')));
                out.push_str("</pre>");
            }
            Segment::Text(plain) => out.push_str(&escape_html(plain)),
        }
    }
    out
}

enum Segment<'a> {
    Text(&'a str),
    /// What lies between a pair of ``` fences.
    Code(&'a str),
}

/// Cuts `text` at ``` fences: pairs enclose code; a final unpaired fence stays in the text.
fn fenced_segments(text: &str) -> Vec<Segment<'_>> {
    const FENCE: &str = "```";
    let mut segments = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find(FENCE) {
        let after = &rest[open + FENCE.len()..];
        let Some(close) = after.find(FENCE) else {
            break;
        };
        if open > 0 {
            segments.push(Segment::Text(&rest[..open]));
        }
        segments.push(Segment::Code(&after[..close]));
        rest = &after[close + FENCE.len()..];
    }
    if !rest.is_empty() {
        segments.push(Segment::Text(rest));
    }
    segments
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

    #[test]
    fn hard_cut_keeps_escapes_with_their_character() {
        // No spaces: the cut is hard; it must not leave a trailing backslash.
        let text = escape_discord(&"*".repeat(3000));
        // An odd budget puts the hard cut right after a backslash.
        let pieces = split_message(&text, 2001);
        for p in &pieces {
            assert!(!p.ends_with('\\') || p.ends_with("\\\\"), "dangling escape");
            assert!(p.starts_with("\\*"), "piece starts mid-escape: {:?}", &p[..4]);
        }
        assert_eq!(pieces.concat(), text);
    }

    #[test]
    fn discord_escaping_keeps_text_visible_and_inert() {
        let cases = [
            ("plain words", "plain words"),
            ("**bold** _it_ ~~s~~ `c` |sp|", "\\*\\*bold\\*\\* \\_it\\_ \\~\\~s\\~\\~ \\`c\\` \\|sp\\|"),
            ("[link](http://x)", "\\[link\\](http://x)"),
            ("<@123> <#5> <t:1>", "\\<@123> \\<#5> \\<t:1>"),
            ("# head\n> quote\n- item\na - b", "\\# head\n\\> quote\n\\- item\na - b"),
            ("@everyone and @here", "@\u{200B}everyone and @\u{200B}here"),
            ("back\\slash", "back\\\\slash"),
            // Balanced code blocks stay code; their insides are left alone.
            ("see:\n```rust\nlet *x = a_b;\n```\ndone_", "see:\n```rust\nlet *x = a_b;\n```\ndone\\_"),
            // An unbalanced fence is shown literally.
            ("open ``` never closed *", "open \\`\\`\\` never closed \\*"),
        ];
        for (input, expected) in cases {
            assert_eq!(escape_discord(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn html_escaping_and_code_blocks() {
        assert_eq!(escape_html("<b>a & b</b>"), "&lt;b&gt;a &amp; b&lt;/b&gt;");
        assert_eq!(
            telegram_html("x < y\n```rust\nif a < b {}\n```\nend & <i>"),
            "x &lt; y\n<pre>if a &lt; b {}</pre>\nend &amp; &lt;i&gt;"
        );
        assert_eq!(telegram_html("```no close <b>"), "```no close &lt;b&gt;");
    }
}
