//! Token-aware chunking: whole paragraphs where they fit, else sentences, with overlap.

use unicode_segmentation::UnicodeSegmentation;

use crate::config::{ChunkUnit, Chunking};

/// A chunk of one file, before it is embedded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub text: String,
    /// First and last line (1-based).
    pub line_start: u32,
    pub line_end: u32,
}

/// A sentence (or a hard-cut part of a very long one) with its place in the file.
#[derive(Debug, Clone)]
struct Unit {
    start: usize,
    end: usize,
    tokens: usize,
    /// First unit of a paragraph: chunks prefer to start here.
    para_start: bool,
}

/// Splits `text` into chunks of at most `cfg.max_tokens` tokens as counted by `count`.
pub fn chunk(text: &str, cfg: &Chunking, count: &dyn Fn(&str) -> usize) -> Vec<Piece> {
    let lines = LineIndex::new(text);
    let units = units(text, cfg.max_tokens, count);
    let piece = |a: &Unit, b: &Unit| Piece {
        text: text[a.start..b.end].trim().to_string(),
        line_start: lines.line(a.start),
        line_end: lines.line(b.end.saturating_sub(1).max(a.start)),
    };
    if cfg.unit == ChunkUnit::Sentence {
        return units.iter().map(|u| piece(u, u)).filter(|p| !p.text.is_empty()).collect();
    }
    let mut out = Vec::new();
    let mut first = 0;
    while first < units.len() {
        // Grow the chunk while it fits.
        let mut last = first;
        let mut tokens = units[first].tokens;
        while last + 1 < units.len() && tokens + units[last + 1].tokens <= cfg.max_tokens {
            last += 1;
            tokens += units[last].tokens;
        }
        // Prefer to end at a paragraph end when one is in the second half of the chunk.
        if last + 1 < units.len() && !units[last + 1].para_start {
            let mut t = tokens;
            let mut k = last;
            while k > first && t > cfg.max_tokens / 2 {
                t -= units[k].tokens;
                k -= 1;
                if units[k + 1].para_start {
                    last = k;
                    break;
                }
            }
        }
        out.push(piece(&units[first], &units[last]));
        if last + 1 >= units.len() {
            break;
        }
        // Next chunk starts with up to `overlap_tokens` of this one's last sentences, unless
        // the next unit opens a paragraph (paragraphs stand on their own).
        let mut next = last + 1;
        if !units[next].para_start {
            let mut overlap = 0;
            while next > first + 1 && overlap + units[next - 1].tokens <= cfg.overlap_tokens {
                overlap += units[next - 1].tokens;
                next -= 1;
            }
        }
        first = next;
    }
    out.retain(|p| !p.text.is_empty());
    out
}

/// Sentences of every paragraph; sentences longer than `max` tokens are cut at words.
fn units(text: &str, max: usize, count: &dyn Fn(&str) -> usize) -> Vec<Unit> {
    let mut out = Vec::new();
    for (p_start, para) in paragraphs(text) {
        let mut para_start = true;
        for (s_off, sentence) in para.split_sentence_bound_indices() {
            if sentence.trim().is_empty() {
                continue;
            }
            let start = p_start + s_off;
            let tokens = count(sentence);
            if tokens <= max {
                out.push(Unit { start, end: start + sentence.len(), tokens, para_start });
            } else {
                for (w_start, w_end, t) in cut_words(sentence, max, count) {
                    out.push(Unit { start: start + w_start, end: start + w_end, tokens: t, para_start });
                    para_start = false;
                }
            }
            para_start = false;
        }
    }
    out
}

/// Paragraphs (separated by blank lines) with their byte offsets.
fn paragraphs(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let blank = line.trim().is_empty();
        match (blank, start) {
            (false, None) => start = Some(offset),
            (true, Some(s)) => {
                out.push((s, &text[s..offset]));
                start = None;
            }
            _ => {}
        }
        offset += line.len();
    }
    if let Some(s) = start {
        out.push((s, &text[s..]));
    }
    out
}

/// Cuts an over-long sentence into runs of words of at most `max` tokens.
fn cut_words(s: &str, max: usize, count: &dyn Fn(&str) -> usize) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut end = 0;
    let mut tokens = 0;
    for (i, w) in s.split_word_bound_indices() {
        let t = count(w).max(usize::from(!w.trim().is_empty()));
        if tokens + t > max && end > start {
            out.push((start, end, tokens));
            start = i;
            tokens = 0;
        }
        // A single "word" longer than the limit is cut at characters.
        if t > max {
            let mut cut = i;
            for (j, _) in w.char_indices().step_by(max.max(1)).skip(1) {
                out.push((cut, i + j, max));
                cut = i + j;
            }
            start = cut;
            end = i + w.len();
            tokens = count(&s[cut..end]);
            continue;
        }
        tokens += t;
        end = i + w.len();
    }
    if end > start {
        out.push((start, end, tokens));
    }
    out
}

struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { starts }
    }

    /// 1-based line of a byte offset.
    fn line(&self, offset: usize) -> u32 {
        (self.starts.partition_point(|&s| s <= offset)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    fn cfg(max: usize, overlap: usize) -> Chunking {
        Chunking { max_tokens: max, overlap_tokens: overlap, unit: ChunkUnit::Paragraph }
    }

    #[test]
    fn short_paragraphs_stay_whole_and_know_their_lines() {
        let text = "First para one. Still first.\n\nSecond para\non two lines.\n";
        let c = chunk(text, &cfg(5, 0), &words);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0], Piece { text: "First para one. Still first.".into(), line_start: 1, line_end: 1 });
        assert_eq!(c[1].text, "Second para\non two lines.");
        assert_eq!((c[1].line_start, c[1].line_end), (3, 4));
    }

    #[test]
    fn paragraphs_pack_together_up_to_the_limit() {
        let text = "a b.\n\nc d.\n\ne f g h i j.\n";
        let c = chunk(text, &cfg(6, 0), &words);
        assert_eq!(c.iter().map(|p| p.text.as_str()).collect::<Vec<_>>(), vec!["a b.\n\nc d.", "e f g h i j."]);
    }

    #[test]
    fn long_paragraphs_split_at_sentences_with_overlap() {
        let text = "One two three. Four five six. Seven eight nine. Ten eleven twelve.";
        let c = chunk(text, &cfg(6, 3), &words);
        assert_eq!(c[0].text, "One two three. Four five six.");
        assert_eq!(c[1].text, "Four five six. Seven eight nine.");
        assert!(c.iter().all(|p| words(&p.text) <= 6));
        assert!(c.last().unwrap().text.ends_with("Ten eleven twelve."));
    }

    #[test]
    fn a_huge_sentence_is_cut_at_words() {
        let text = "w ".repeat(50);
        let c = chunk(&text, &cfg(16, 0), &words);
        assert!(c.len() >= 3);
        assert!(c.iter().all(|p| words(&p.text) <= 16), "{c:?}");
        assert_eq!(c.iter().map(|p| words(&p.text)).sum::<usize>(), 50);
    }

    #[test]
    fn sentence_unit_gives_one_chunk_per_sentence() {
        let text = "Alpha beta. Gamma delta!\n\nEpsilon?";
        let c = chunk(text, &Chunking { unit: ChunkUnit::Sentence, ..cfg(50, 0) }, &words);
        assert_eq!(
            c.iter().map(|p| p.text.as_str()).collect::<Vec<_>>(),
            vec!["Alpha beta.", "Gamma delta!", "Epsilon?"]
        );
    }

    #[test]
    fn non_ascii_text_is_never_cut_inside_a_character() {
        let text = "日本語の文章です。".repeat(30);
        let c = chunk(&text, &cfg(16, 4), &|s: &str| s.chars().count());
        assert!(!c.is_empty());
        assert!(c.iter().all(|p| p.text.chars().count() <= 16));
    }
}
