//! Unicode isolates for answers that mix right-to-left script (Hebrew, Arabic) with Latin
//! words, numbers and file names, so that chat clients show every run in its own order.
//!
//! A client lays out each line by the Unicode Bidirectional Algorithm (UAX #9), the line's
//! direction taken from its first strong character. In a right-to-left line a Latin run that
//! ends in neutrals (`C++`), a range joined by a dash (`207–208`) or a file name next to a
//! number is drawn out of order. [`isolate_ltr_runs`] wraps such runs in LRI … PDI, which
//! the algorithm lays out as one left-to-right unit that its neighbours see as a neutral;
//! [`isolate_rtl_spans`] wraps the right-to-left parts of a citation (a Hebrew file name or
//! heading) in FSI … PDI, so the line stays in the order its fields are written.
//!
//! Both run on plain text, before a platform escapes or renders it, so isolates never land
//! inside an HTML entity, a markdown escape or a tag; text without right-to-left characters
//! comes back as it is. Isolates are characters (one UTF-16 unit each): they count against a
//! platform's length limit, so they are added before the text is split.

use std::borrow::Cow;

use unicode_bidi::{bidi_class, BidiClass};

/// LEFT-TO-RIGHT ISOLATE: what follows, up to [`PDI`], is laid out left to right.
pub(crate) const LRI: char = '\u{2066}';
/// FIRST STRONG ISOLATE: what follows, up to [`PDI`], takes its own first strong direction.
pub(crate) const FSI: char = '\u{2068}';
/// POP DIRECTIONAL ISOLATE: ends the innermost isolate.
pub(crate) const PDI: char = '\u{2069}';

/// Fenced code blocks are left exactly as written (and so is what follows an unclosed fence,
/// a block still streaming in).
const FENCE: &str = "```";

/// Opening brackets and quotes, and dashes, that belong to the right-to-left sentence
/// around a run rather than to the run (`(mT5` or the hyphen of `ב-GPU`).
const LEADING: &[char] = &['(', '[', '{', '<', '"', '\'', '«', '„', '“', '‘', '‹', '-', '‐', '‑', '‒', '–', '—'];
/// Closing brackets and quotes, sentence punctuation and dashes after a run.
const TRAILING: &[char] = &[
    ')', ']', '}', '>', '"', '\'', '»', '”', '’', '›', '.', ',', ';', ':', '!', '?', '…', '-', '‐', '‑', '‒', '–', '—',
];

/// `text` with each left-to-right run of a right-to-left line wrapped in LRI … PDI.
///
/// A line is right-to-left when its first strong character is (UAX #9, P2). A run is one or
/// more words without right-to-left letters, from the first to the last word that needs
/// keeping in order: one with a Latin letter, or a number joined to something (`207–208`,
/// `3.5`), without the brackets, quotes and punctuation around it. Plain numbers (`2024`, a
/// list's `1.`) are drawn right already and are left alone. Words that a client turns into
/// links (`https://…`, `www.…`, addresses and mentions with `@`) are never wrapped, nor is
/// anything in a fenced code block. The result depends on each line alone, so a streamed
/// answer keeps the isolates it had as it grows.
pub(crate) fn isolate_ltr_runs(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_rtl) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for (i, part) in text.split(FENCE).enumerate() {
        if i > 0 {
            out.push_str(FENCE);
        }
        // Odd parts lie between a fence and the next one; the last part after an unclosed
        // fence is odd too.
        if i % 2 == 1 {
            out.push_str(part);
            continue;
        }
        for line in part.split_inclusive('\n') {
            if first_strong_is_rtl(line) {
                isolate_line(line, &mut out);
            } else {
                out.push_str(line);
            }
        }
    }
    Cow::Owned(out)
}

/// `field` (a file name, a location) with each right-to-left span wrapped in FSI … PDI: from
/// a right-to-left letter up to the last right-to-left letter (or a number that follows it
/// after spaces) before the next Latin letter. `§ מבוא, lines 207–208` becomes
/// `§ {FSI}מבוא{PDI}, lines 207–208`: the heading is one unit in a line whose own direction
/// comes from its Latin words.
pub(crate) fn isolate_rtl_spans(field: &str) -> Cow<'_, str> {
    if !field.chars().any(is_rtl) {
        return Cow::Borrowed(field);
    }
    let mut out = String::with_capacity(field.len() + 12);
    let mut span: Option<(usize, usize)> = None;
    let mut copied = 0;
    for (at, c) in field.char_indices() {
        let class = bidi_class(c);
        match (span, class) {
            (Some((start, end)), BidiClass::L) => {
                close_span(field, start, end, &mut out);
                copied = end;
                span = None;
            }
            (None, BidiClass::R | BidiClass::AL) => {
                out.push_str(&field[copied..at]);
                span = Some((at, at + c.len_utf8()));
            }
            (Some((start, _)), BidiClass::R | BidiClass::AL | BidiClass::NSM) => {
                span = Some((start, at + c.len_utf8()));
            }
            // A number after the words, a space away, is theirs (`פרק 3`); one joined to them
            // by punctuation (`מדריך<1>`) is left outside, the punctuation with it.
            (Some((start, end)), BidiClass::EN | BidiClass::AN) if field[end..at].chars().all(char::is_whitespace) => {
                span = Some((start, at + c.len_utf8()));
            }
            _ => {}
        }
    }
    if let Some((start, end)) = span {
        close_span(field, start, end, &mut out);
        copied = end;
    }
    out.push_str(&field[copied..]);
    Cow::Owned(out)
}

fn close_span(field: &str, start: usize, end: usize, out: &mut String) {
    out.push(FSI);
    out.push_str(&field[start..end]);
    out.push(PDI);
}

fn is_rtl(c: char) -> bool {
    matches!(bidi_class(c), BidiClass::R | BidiClass::AL)
}

/// Whether the line's first strong character, outside isolates, is right-to-left (P2, P3:
/// a line with none is left-to-right).
fn first_strong_is_rtl(line: &str) -> bool {
    let mut depth = 0usize;
    for c in line.chars() {
        match c {
            '\u{2066}'..='\u{2068}' => depth += 1,
            PDI => depth = depth.saturating_sub(1),
            _ if depth > 0 => {}
            _ => match bidi_class(c) {
                BidiClass::L => return false,
                BidiClass::R | BidiClass::AL => return true,
                _ => {}
            },
        }
    }
    false
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Space,
    /// Right-to-left letters and the marks on them.
    Rtl,
    /// Anything else between spaces and right-to-left letters: Latin, digits, punctuation.
    Other,
}

/// One right-to-left line, its left-to-right runs isolated.
fn isolate_line(line: &str, out: &mut String) {
    let parts = atoms(line);
    // The isolate being built: (start of its first word, end of its last word so far).
    let mut run: Option<(usize, usize)> = None;
    let mut copied = 0;
    for &(start, end, kind) in &parts {
        let word = &line[start..end];
        let breaks = kind == Kind::Rtl || (kind == Kind::Other && is_link_like(word));
        if breaks {
            if let Some((from, to)) = run.take() {
                push_isolate(line, copied, from, to, out);
                copied = to;
            }
            continue;
        }
        if kind == Kind::Space {
            continue;
        }
        let (lead, core) = trimmed(word);
        if !needs_order(core) {
            continue;
        }
        // The run is one range: what lies between its words is in it, and only its first
        // word's leading and last word's trailing punctuation stay outside.
        let (from, to) = (start + lead, start + lead + core.len());
        run = Some((run.map_or(from, |(first, _)| first), to));
    }
    if let Some((from, to)) = run {
        push_isolate(line, copied, from, to, out);
        copied = to;
    }
    out.push_str(&line[copied..]);
}

fn push_isolate(line: &str, copied: usize, from: usize, to: usize, out: &mut String) {
    out.push_str(&line[copied..from]);
    out.push(LRI);
    out.push_str(&line[from..to]);
    out.push(PDI);
}

/// The line cut into spaces, right-to-left letters and the rest, as byte ranges.
fn atoms(line: &str) -> Vec<(usize, usize, Kind)> {
    let mut atoms: Vec<(usize, usize, Kind)> = Vec::new();
    for (at, c) in line.char_indices() {
        let class = bidi_class(c);
        let previous = atoms.last().map(|atom| atom.2);
        let kind = if c.is_whitespace() {
            Kind::Space
        } else if matches!(class, BidiClass::R | BidiClass::AL)
            || (class == BidiClass::NSM && previous == Some(Kind::Rtl))
        {
            Kind::Rtl
        } else {
            Kind::Other
        };
        match atoms.last_mut() {
            Some(last) if last.2 == kind => last.1 = at + c.len_utf8(),
            _ => atoms.push((at, at + c.len_utf8(), kind)),
        }
    }
    atoms
}

/// `word` without the brackets, quotes and punctuation that belong to the sentence around
/// it: the length cut from its front, and what is left. A bracket is kept when its partner
/// is in the word (`f(x)`).
fn trimmed(word: &str) -> (usize, &str) {
    let (mut lead, mut end) = (0, word.len());
    loop {
        let before = (lead, end);
        let core = &word[lead..end];
        // Brackets around the whole word are the sentence's: `(mT5)`.
        if let Some(close) =
            core.chars().next().and_then(closing).filter(|&close| core.len() > 1 && core.ends_with(close))
        {
            lead += 1;
            end -= close.len_utf8();
            continue;
        }
        if let Some(c) = core.chars().next().filter(|c| LEADING.contains(c)) {
            if closing(c).is_none_or(|close| core.matches(c).count() > core.matches(close).count()) {
                lead += c.len_utf8();
            }
        }
        let core = &word[lead..end];
        if let Some(c) = core.chars().next_back().filter(|c| TRAILING.contains(c)) {
            if opening(c).is_none_or(|open| core.matches(c).count() > core.matches(open).count()) {
                end -= c.len_utf8();
            }
        }
        if (lead, end) == before {
            return (lead, &word[lead..end]);
        }
    }
}

fn closing(open: char) -> Option<char> {
    match open {
        '(' => Some(')'),
        '[' => Some(']'),
        '{' => Some('}'),
        '<' => Some('>'),
        _ => None,
    }
}

fn opening(close: char) -> Option<char> {
    match close {
        ')' => Some('('),
        ']' => Some('['),
        '}' => Some('{'),
        '>' => Some('<'),
        _ => None,
    }
}

/// Whether a word (trimmed) must be isolated to keep its order: it has a Latin (strong
/// left-to-right) letter, or digits joined to something else. A plain number is drawn in
/// order by the algorithm itself.
fn needs_order(word: &str) -> bool {
    let mut digits = false;
    let mut others = false;
    for c in word.chars() {
        match bidi_class(c) {
            BidiClass::L => return true,
            BidiClass::EN | BidiClass::AN => digits = true,
            _ => others = true,
        }
    }
    digits && others
}

/// Whether a client may turn the word into a link or a mention: an isolate next to it could
/// be taken into the link (Discord's link pattern stops only at spaces and `<`).
fn is_link_like(word: &str) -> bool {
    word.contains("://") || word.contains('@') || word.trim_start_matches(LEADING).starts_with("www.")
}

#[cfg(test)]
mod tests {
    use unicode_bidi::BidiInfo;

    use super::*;

    /// `text` as a client draws it: each line in visual order, left to right (UAX #9 by
    /// unicode-bidi, without mirroring), the isolate marks themselves left out.
    fn visual(text: &str) -> Vec<String> {
        let info = BidiInfo::new(text, None);
        info.paragraphs
            .iter()
            .map(|para| {
                let line = para.range.start..para.range.end;
                info.reorder_line(para, line)
                    .chars()
                    .filter(|c| !('\u{2066}'..=PDI).contains(c) && *c != '\n')
                    .collect()
            })
            .collect()
    }

    /// Whether every one of `runs` shows, left to right and whole, in the drawn `text`.
    fn reads_in_order(text: &str, runs: &[&str]) -> bool {
        let drawn = visual(text).join("\n");
        runs.iter().all(|run| drawn.contains(run))
    }

    /// Right-to-left lines, and what must read left to right and whole in them.
    const MIXED: &[(&str, &[&str])] = &[
        ("כדאי לאמן mT5-Large בשביל עברית", &["mT5-Large"]),
        ("כדאי לאמן mT5-Large בשביל עברית, ראו guide-he.txt שורות 207-208.", &["mT5-Large", "guide-he.txt", "207-208"]),
        ("ראו שורות 207–208 במדריך.", &["207–208"]),
        ("לומדים C++ ו-Node.js לפני mT5.", &["C++", "Node.js", "mT5"]),
        ("הריצו nice -n 19 cargo test, אחר כך C#.", &["nice -n 19 cargo test", "C#"]),
        ("הקובץ (config.yaml) ו-f(x) בשורות 3–5:", &["config.yaml", "f(x)", "3–5"]),
    ];

    /// Of [`MIXED`], the lines a client draws out of order when nothing is isolated: the
    /// reason the isolates are there (and the proof that the visual check can fail).
    const OUT_OF_ORDER_AS_THEY_ARE: &[&str] =
        &["ראו שורות 207–208 במדריך.", "לומדים C++ ו-Node.js לפני mT5.", "הריצו nice -n 19 cargo test, אחר כך C#."];

    #[test]
    fn latin_runs_numbers_and_file_names_read_in_order_in_a_hebrew_line() {
        for (line, runs) in MIXED {
            let isolated = isolate_ltr_runs(line);
            assert!(reads_in_order(&isolated, runs), "{line:?} drawn as {:?}", visual(&isolated));
        }
    }

    #[test]
    fn without_isolates_those_lines_read_out_of_order() {
        for line in OUT_OF_ORDER_AS_THEY_ARE {
            let (_, runs) = MIXED.iter().find(|(text, _)| text == line).unwrap();
            assert!(!reads_in_order(line, runs), "{line:?} is drawn in order already: {:?}", visual(line));
        }
    }

    #[test]
    fn isolates_go_around_the_run_not_its_sentence_punctuation() {
        let cases = [
            ("ראו guide-he.txt.", "ראו \u{2066}guide-he.txt\u{2069}."),
            ("אימון ב-GPU אחד", "אימון ב-\u{2066}GPU\u{2069} אחד"),
            ("המודל (mT5) טוב", "המודל (\u{2066}mT5\u{2069}) טוב"),
            ("הפונקציה f(x) מחזירה", "הפונקציה \u{2066}f(x)\u{2069} מחזירה"),
            ("ראו \"mT5 Large\" 2 models, טוב", "ראו \"\u{2066}mT5 Large\" 2 models\u{2069}, טוב"),
            // Plain numbers read in order as they are; a list's marker stays first on its line.
            ("1. שלום 2024 ו-3", "1. שלום 2024 ו-3"),
            ("שורות 207–208", "שורות \u{2066}207–208\u{2069}"),
            // Only right-to-left lines change.
            ("mT5 first, אחר כך C++\nואז C++", "mT5 first, אחר כך C++\nואז \u{2066}C++\u{2069}"),
        ];
        for (input, expected) in cases {
            assert_eq!(isolate_ltr_runs(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn text_without_right_to_left_letters_comes_back_as_it_is() {
        for text in [
            "Train mT5-Large; see guide.txt lines 207–208 and C++ at https://example.com/a_b.",
            "1. one\n2. two\n```\ncode 3–4\n```",
            "",
        ] {
            assert!(matches!(isolate_ltr_runs(text), Cow::Borrowed(same) if same == text));
            assert!(matches!(isolate_rtl_spans(text), Cow::Borrowed(same) if same == text));
        }
    }

    #[test]
    fn links_and_mentions_are_never_wrapped_or_touched() {
        let url = "https://example.com/mT5-Large/a_b?x=1&y=207-208#top";
        let line = format!("ראו {url} ו-www.example.org/he או כתבו ל-bot@example.com, @everyone");
        assert_eq!(isolate_ltr_runs(&line), line);

        // A run next to a link stops before it, a space away: a client's link pattern, which
        // stops only at spaces, never takes an isolate into the address.
        let line = format!("המודל mT5 בכתובת {url}.");
        let isolated = isolate_ltr_runs(&line);
        assert_eq!(isolated, format!("המודל \u{2066}mT5\u{2069} בכתובת {url}."));
        assert!(reads_in_order(&isolated, &[url]), "{:?}", visual(&isolated));
    }

    #[test]
    fn code_blocks_are_left_as_written_even_before_their_fence_closes() {
        let code = "```rust\nlet x = \"שלום\"; // C++ 3–4\n```";
        let text = format!("הקוד ב-C++:\n{code}\nואז mT5 שוב");
        assert_eq!(
            isolate_ltr_runs(&text),
            format!("הקוד ב-\u{2066}C++\u{2069}:\n{code}\nואז \u{2066}mT5\u{2069} שוב")
        );
        // Streaming: the block is open for now, and already left alone.
        let open = "הקוד:\n```rust\nlet x = \"שלום\"; // C++";
        assert_eq!(isolate_ltr_runs(open), open);
    }

    #[test]
    fn a_source_line_with_a_hebrew_file_name_or_heading_reads_in_its_order() {
        // As the platforms write a source line: number, file, (location).
        let line = |source: &str, location: &str| {
            format!("[1] {} ({})", isolate_rtl_spans(source), isolate_rtl_spans(location))
        };
        let raw = |source: &str, location: &str| format!("[1] {source} ({location})");
        let cases = [
            ("guide-he.txt", "§ מבוא, lines 207–208", "[1] guide-he.txt (§ אובמ, lines 207–208)"),
            ("מדריך-עברית.txt", "§ מבוא, lines 207–208", "[1] תירבע-ךירדמ.txt (§ אובמ, lines 207–208)"),
            ("docs/עברית/guide.md", "§ פרק 3, lines 5-6", "[1] docs/תירבע/guide.md (§ 3 קרפ, lines 5-6)"),
            ("מדריך.pdf", "p. 12", "[1] ךירדמ.pdf (p. 12)"),
        ];
        for (source, location, drawn) in cases {
            assert_eq!(visual(&line(source, location)), [drawn], "{source:?} {location:?}");
        }
        // A Hebrew file name makes the whole line right-to-left when nothing is isolated.
        assert_ne!(visual(&raw("מדריך-עברית.txt", "§ מבוא, lines 207–208")), [cases[1].2]);
        assert_eq!(isolate_rtl_spans("§ מבוא, lines 207–208"), "§ \u{2068}מבוא\u{2069}, lines 207–208");
    }
}
