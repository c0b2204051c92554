//! What an answer says, read as text: SQuAD's normalisation (so "The Normans." and
//! "normans" compare equal), its content words, citation marks taken out. Answering,
//! evaluation and question generation all read answers this way.

use std::collections::BTreeSet;

/// SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punct: String = lower.chars().filter(|c| !c.is_ascii_punctuation()).collect();
    no_punct.split_whitespace().filter(|w| !matches!(*w, "a" | "an" | "the")).collect::<Vec<_>>().join(" ")
}

/// The answer without citation marks (`[1]`, `[1, 2]`), on one line.
pub fn clean_answer(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        match rest[open..].find(']') {
            Some(close) if rest[open + 1..open + close].chars().all(|c| c.is_ascii_digit() || c == ',' || c == ' ') => {
                rest = &rest[open + close + 1..];
            }
            _ => {
                out.push('[');
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Words that carry no claim of their own: an answer is supported by a passage when the
/// passage holds its other words.
pub(crate) const STOPWORDS: [&str; 64] = [
    "is", "are", "was", "were", "be", "been", "being", "am", "of", "in", "on", "at", "to", "for", "from", "by", "with",
    "and", "or", "but", "as", "it", "its", "this", "that", "these", "those", "they", "them", "their", "he", "she",
    "his", "her", "we", "you", "i", "my", "our", "which", "who", "whom", "what", "when", "where", "why", "how", "not",
    "no", "yes", "do", "does", "did", "has", "have", "had", "can", "could", "will", "would", "there", "than", "so",
    "also",
];

/// The normalised words of `text` that say something (stopwords left out), in order.
pub fn content_words(text: &str) -> Vec<String> {
    normalize_answer(text).split_whitespace().filter(|w| !STOPWORDS.contains(w)).map(str::to_string).collect()
}

/// The share of `answer`'s content words found among `evidence`'s words (0 when the answer
/// has none: an empty claim supports nothing).
pub fn words_found(answer: &str, evidence: &str) -> f64 {
    let claimed = content_words(answer);
    if claimed.is_empty() {
        return 0.0;
    }
    let normalised = normalize_answer(evidence);
    let present: BTreeSet<&str> = normalised.split_whitespace().collect();
    claimed.iter().filter(|w| present.contains(w.as_str())).count() as f64 / claimed.len() as f64
}

/// Whether the normalised `answer` stands word for word in the normalised `evidence`.
pub fn stands_in(answer: &str, evidence: &str) -> bool {
    let answer = normalize_answer(answer);
    !answer.is_empty() && format!(" {} ", normalize_answer(evidence)).contains(&format!(" {answer} "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squad_normalisation_citations_and_dont_know() {
        assert_eq!(normalize_answer("The  Normans, of France!"), "normans of france");
        assert_eq!(clean_answer("Rollo [1, 2] led them [citation]"), "Rollo led them [citation]");
    }

    #[test]
    fn support_counts_the_answers_content_words_in_the_evidence() {
        let passage = "It is painted violet from base to lantern.";
        assert_eq!(words_found("Violet", passage), 1.0);
        assert_eq!(words_found("It is painted violet.", passage), 1.0);
        // The lighthouse answer that contradicted its own evidence.
        let invented = "a traditional colour of the island of Zab in the North Sea";
        assert_eq!(words_found(invented, passage), 0.0);
        assert_eq!(words_found("violet and red", passage), 0.5);
        assert_eq!(words_found("it is", passage), 0.0, "no content words: no support");
        assert!(stands_in("violet", passage) && stands_in("from base to lantern", passage));
        assert!(!stands_in("viol", passage), "whole words only");
    }
}
