//! Quoted evidence, an extractive reader: the one sentence of the passages shown
//! to the model that best supports an answer, quoted under it so people can check it
//! (`retrieval.quote_evidence`), given as the answer itself (`answer_style: quote`, for
//! models too small to answer well), or required before an answer is shown
//! (`answer_style: verified`). Sentences are scored against the question (and the answer,
//! when there is one) by the cross-encoder when `models.reranker` is loaded, else by the
//! embedder's cosine similarity, or, in a language the embedder does not speak, by the
//! question's words they hold.
//!
//! A quote is shown only once it is found again, word for word (whitespace and case
//! aside), in the stored passage it claims to come from; it then carries its own place
//! (page, section, lines) there.

use std::collections::BTreeSet;
use std::sync::Arc;

use lore_core::{cosine, Chunk, Embedder, Hit, PairScorer, PluginContext};
use lore_knowledge::hebrew::{is_function_word, word_forms};
use unicode_segmentation::UnicodeSegmentation;

use crate::question::answer_text::STOPWORDS;

/// A sentence quoted from passage `passage` (numbered from 1, as in the prompt and the
/// sources), verified to stand in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Quote {
    pub sentence: String,
    pub passage: usize,
    /// Where the sentence stands in its source ("p. 3", "§ Leave, line 12").
    pub location: String,
    /// How well it supports the claim (the cross-encoder's score, else cosine similarity).
    pub score: f32,
}

impl Quote {
    /// The line shown under an answer.
    pub fn shown(&self) -> String {
        format!("Evidence [{}]: “{}”", self.passage, self.sentence)
    }
}

/// Chooses the sentence; shared by every bot (the models are the daemon's).
#[derive(Clone)]
pub struct EvidenceFinder {
    embedder: Arc<dyn Embedder>,
    cross_encoder: Option<Arc<dyn PairScorer>>,
}

impl EvidenceFinder {
    pub fn new(cx: &PluginContext) -> Self {
        Self { embedder: cx.embedder.clone(), cross_encoder: cx.cross_encoder.clone() }
    }

    /// The sentence of `passages` that best supports `answer` to `question` (or answers
    /// `question`, when `answer` is `None`); `None` when the passages hold no sentence
    /// that can be verified.
    pub async fn best(&self, question: &str, answer: Option<&str>, passages: &[Hit]) -> anyhow::Result<Option<Quote>> {
        let candidates = candidates(passages);
        if candidates.is_empty() {
            return Ok(None);
        }
        let claim = match answer {
            Some(answer) => format!("{question} {answer}"),
            None => question.to_string(),
        };
        let texts: Vec<String> = candidates.iter().map(|(_, s)| s.clone()).collect();
        let scores = match &self.cross_encoder {
            Some(cross) => cross.score_pairs(&claim, &texts).await?,
            None => {
                let mut all = vec![claim];
                all.extend(texts);
                let vectors = self.embedder.embed(&all).await?;
                vectors[1..].iter().map(|v| cosine(&vectors[0], v)).collect()
            }
        };
        Ok(best_verified(&candidates, scores, passages))
    }

    /// The sentence of `passages` that shares the most of `question`'s content words
    /// (read as full text reads them: in Hebrew with and without prefixes), for a language
    /// the embedder was not trained on, whose cosine similarities would choose at random.
    /// `None` when no sentence shares any: it does not answer the question.
    pub fn best_by_words(question: &str, passages: &[Hit]) -> Option<Quote> {
        let candidates = candidates(passages);
        let asked = content_forms(question);
        let scores: Vec<f32> = candidates
            .iter()
            .map(|(_, sentence)| {
                let found = content_forms(sentence).intersection(&asked).count();
                found as f32 / asked.len().max(1) as f32
            })
            .collect();
        let (candidates, scores): (Vec<_>, Vec<_>) =
            candidates.into_iter().zip(scores).filter(|(_, score)| *score > 0.0).unzip();
        best_verified(&candidates, scores, passages)
    }
}

/// The forms of `text`'s words full text searches by, without function words (Hebrew,
/// with or without prefixes, and English).
fn content_forms(text: &str) -> BTreeSet<String> {
    word_forms(text)
        .into_iter()
        .filter(|forms| !is_function_word(&forms[0]) && !STOPWORDS.contains(&forms[0].as_str()))
        .flatten()
        .collect()
}

/// Every sentence of `passages`, with the index of its passage.
fn candidates(passages: &[Hit]) -> Vec<(usize, String)> {
    passages.iter().enumerate().flat_map(|(i, h)| sentences(&h.chunk.text).into_iter().map(move |s| (i, s))).collect()
}

/// The best-scored sentence that verifies: one that does not is never shown. Ties go to
/// the earlier passage, which retrieval ranked higher.
fn best_verified(candidates: &[(usize, String)], scores: Vec<f32>, passages: &[Hit]) -> Option<Quote> {
    let mut ranked: Vec<(usize, f32)> = scores.into_iter().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.into_iter().find_map(|(i, score)| {
        let (passage, sentence) = &candidates[i];
        let location = verify(sentence, &passages[*passage].chunk)?;
        Some(Quote { sentence: sentence.clone(), passage: passage + 1, location, score })
    })
}

/// Where `quote` stands in `chunk`, if it does word for word (whitespace and case aside):
/// the chunk's place narrowed to the quote's lines where the chunk has lines.
pub fn verify(quote: &str, chunk: &Chunk) -> Option<String> {
    let (start, end) = find_loosely(&chunk.text, quote)?;
    if chunk.line_start == 0 {
        return Some(chunk.location());
    }
    let line = |at: usize| chunk.line_start + chunk.text[..at].matches('\n').count() as u32;
    let narrowed = Chunk { line_start: line(start), line_end: line(end), ..chunk.clone() };
    Some(narrowed.location())
}

/// The byte range of `needle` in `haystack`, comparing words case-insensitively and any
/// run of whitespace as one space; `None` when it is not there or has no words.
fn find_loosely(haystack: &str, needle: &str) -> Option<(usize, usize)> {
    let wanted: Vec<String> = needle.split_whitespace().map(str::to_lowercase).collect();
    if wanted.is_empty() {
        return None;
    }
    // Words of the haystack with their byte ranges.
    let mut words: Vec<(usize, usize)> = Vec::new();
    let mut start = None;
    for (i, c) in haystack.char_indices().chain(std::iter::once((haystack.len(), ' '))) {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                words.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    let same = |(s, e): (usize, usize), w: &str| haystack[s..e].to_lowercase() == w;
    words.windows(wanted.len()).find(|window| window.iter().zip(&wanted).all(|(r, w)| same(*r, w))).map(|window| {
        let (first, last) = (window[0], window[window.len() - 1]);
        (first.0, last.1)
    })
}

/// The sentences of a passage worth quoting: paragraphs (split at blank lines, headings
/// and list items) with their wrapped lines joined, split at sentence ends; headings and
/// fragments of fewer than four words left out.
pub fn sentences(text: &str) -> Vec<String> {
    let mut paragraphs: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        let starts_item = line.starts_with(['-', '*', '•', '|']) || line.starts_with(|c: char| c.is_ascii_digit());
        if line.is_empty() || line.starts_with('#') || starts_item {
            paragraphs.push(std::mem::take(&mut current));
            if !line.starts_with('#') {
                current.push_str(line);
            }
            continue;
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(line);
    }
    paragraphs.push(current);
    paragraphs
        .iter()
        .flat_map(|p| p.unicode_sentences().map(|s| s.trim().to_string()).collect::<Vec<_>>())
        .filter(|s| s.split_whitespace().count() >= 4)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_leave_out_headings_and_fragments_and_join_wrapped_lines() {
        let text = "# Leave\n\nCall your manager before nine. Then rest!\nUp to five days carry over into next year.";
        assert_eq!(sentences(text), ["Call your manager before nine.", "Up to five days carry over into next year."]);
        let wrapped = "The lighthouse is painted\nviolet from base to lantern.\n- It has one keeper on duty.";
        assert_eq!(
            sentences(wrapped),
            ["The lighthouse is painted violet from base to lantern.", "- It has one keeper on duty."]
        );
    }

    fn chunk(text: &str) -> Chunk {
        Chunk::new("lighthouse.txt", 0, 20, 23, text.into())
    }

    fn hits(texts: &[&str]) -> Vec<Hit> {
        let hit = |(i, text): (usize, &&str)| Hit {
            chunk: Chunk::new(&format!("n{i}.txt"), 0, 1, 1, text.to_string()),
            score: 0.5,
            similarity: None,
            lexical: None,
        };
        texts.iter().enumerate().map(hit).collect()
    }

    #[test]
    fn by_words_the_sentence_holding_the_questions_words_is_quoted_and_none_without_one() {
        let passages = hits(&["לחם טרי נאפה בתנור חם מוקדם בבוקר.", "עברית היא שפה שמית. היא נכתבת מימין לשמאל."]);
        // "In which direction does one write in Hebrew?": "בעברית" meets "עברית".
        let quote = EvidenceFinder::best_by_words("באיזה כיוון כותבים בעברית? ובאיזה כתב?", &passages).unwrap();
        assert_eq!((quote.sentence.as_str(), quote.passage), ("עברית היא שפה שמית.", 2));
        // "Who won the 1986 World Cup?" shares only "of" and "who" with them, if anything.
        assert_eq!(EvidenceFinder::best_by_words("מי זכה במונדיאל של 1986?", &passages), None);
        assert_eq!(EvidenceFinder::best_by_words("מה זה היה?", &passages), None, "function words say nothing");
        // With prefixes they are still function words: "and not", "that it is", "in all".
        let passages = hits(&["ולא שהוא בכל מקום.", "ספר טוב על ים."]);
        assert_eq!(EvidenceFinder::best_by_words("ולא שהוא בכל?", &passages), None);
    }

    #[test]
    fn a_quote_across_a_line_break_verifies_with_its_own_lines() {
        let c = chunk("Zab has one lighthouse.\nIt is painted\nviolet from base to lantern.\nNobody lives there.");
        assert_eq!(verify("It is painted violet from base to lantern.", &c).as_deref(), Some("lines 21-22"));
        assert_eq!(verify("IT IS   PAINTED violet", &c).as_deref(), Some("lines 21-22"), "case and spacing aside");
        assert_eq!(verify("Nobody lives there.", &c).as_deref(), Some("line 23"));
    }

    #[test]
    fn a_paraphrase_or_a_quote_from_elsewhere_does_not_verify() {
        let c = chunk("It is painted violet from base to lantern.");
        assert_eq!(verify("It is coloured violet from base to lantern.", &c), None, "a paraphrase");
        assert_eq!(verify("It is painted violet from base to lantern and red.", &c), None, "more than it says");
        assert_eq!(verify("painted viol", &c), None, "part of a word");
        assert_eq!(verify("", &c), None);
        let pdf = Chunk { line_start: 0, line_end: 0, page: Some(4), ..c.clone() };
        assert_eq!(verify("painted violet", &pdf).as_deref(), Some("p. 4"));
    }
}
