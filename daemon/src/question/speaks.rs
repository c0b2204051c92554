//! Which languages the models speak: whether the generator can answer in a knowledge
//! base's language (if not, bots quote the passage instead, and its `llm` reranker, whose
//! scores are the generator's reading, is left out), and whether the embedder's vectors
//! mean anything in it (if not, hybrid retrieval leans on full text).
//!
//! Who says, in order: the config (`models.NAME.languages`), the GGUF
//! (`general.languages`, which llama.cpp's converter copies from the model card), or the
//! model's tokenizer: one trained on a language splits a sentence of it into fewer tokens
//! than letters, one that was not falls back to about a token a letter (MiniLM's and
//! SmolLM2's do on Hebrew).

use lore_knowledge::language::LANGUAGES;
use lore_knowledge::Language;

/// Who said which languages a model speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaidBy {
    /// `models.NAME.languages`.
    Config,
    /// The GGUF's `general.languages`.
    Gguf,
    /// Its tokenizer, on a sentence of each language.
    Tokenizer,
    /// Nobody: assumed to speak every language (nothing is held back).
    Nobody,
}

/// The languages a model speaks.
#[derive(Debug, Clone, PartialEq)]
pub struct Speaks {
    /// ISO 639-1 codes; `None`: unknown, taken as all.
    codes: Option<Vec<String>>,
    pub by: SaidBy,
}

/// At this many tokens a letter or more, a tokenizer was not trained on the language.
/// Trained ones split Hebrew at 0.2-0.4 a letter; untrained ones at 0.5 (every word one
/// unknown token) to 1.1 (a token a letter).
const UNTRAINED_TOKENS_PER_LETTER: f64 = 0.5;

impl Speaks {
    pub fn said(codes: &[String], by: SaidBy) -> Self {
        Self { codes: Some(codes.to_vec()), by }
    }

    pub fn unknown() -> Self {
        Self { codes: None, by: SaidBy::Nobody }
    }

    /// From the config's list, else the GGUF's.
    pub fn from_lists(config: Option<&[String]>, gguf: Option<&[String]>) -> Option<Self> {
        match (config, gguf) {
            (Some(codes), _) => Some(Self::said(codes, SaidBy::Config)),
            (None, Some(codes)) => Some(Self::said(codes, SaidBy::Gguf)),
            (None, None) => None,
        }
    }

    /// From a tokenizer's counts of [`sample`] in each language. English is always kept:
    /// every model was taken to speak it before languages were told apart, and a guess
    /// from token counts (a byte-level test model splits everything letter by letter) is
    /// not reason enough to stop answering in it; only the config or the GGUF can say so.
    pub fn from_token_counts(counts: &[(Language, usize)]) -> Self {
        let codes = counts
            .iter()
            .filter(|(language, tokens)| {
                *language == Language::English
                    || (*tokens as f64) < UNTRAINED_TOKENS_PER_LETTER * letters(sample(*language)) as f64
            })
            .map(|(language, _)| language.code().to_string())
            .collect();
        Self { codes: Some(codes), by: SaidBy::Tokenizer }
    }

    /// Whether it speaks `language` (a model nobody said anything about does). Lore's
    /// English is every language it has no words of its own for (French, Arabic, ...,
    /// searched as before), so nothing is held back for it whatever a model's list says;
    /// a list that says `multilingual` holds every language.
    pub fn speaks(&self, language: Language) -> bool {
        language == Language::English
            || self.codes.as_ref().is_none_or(|codes| codes.iter().any(|c| c == language.code() || c == "multilingual"))
    }

    /// For `lore check`: "en, he (the GGUF's general.languages)".
    pub fn describe(&self, key: &str) -> String {
        let codes = match &self.codes {
            Some(codes) if codes.is_empty() => "none of Lore's".to_string(),
            Some(codes) => codes.join(", "),
            None => "unknown".to_string(),
        };
        let by = match self.by {
            SaidBy::Config => format!("{key}.languages"),
            SaidBy::Gguf => "the GGUF's general.languages".into(),
            SaidBy::Tokenizer => format!(
                "its tokenizer: {} tokens a letter or more means untrained; set {key}.languages to say",
                UNTRAINED_TOKENS_PER_LETTER
            ),
            SaidBy::Nobody => format!("token counts are estimated; set {key}.languages to say"),
        };
        format!("{codes} ({by})")
    }
}

/// A sentence of `language`, for the tokenizer check.
pub fn sample(language: Language) -> &'static str {
    match language {
        Language::English => "English is a West Germanic language, written from left to right.",
        Language::Hebrew => "עברית היא שפה שמית, והיא נכתבת מימין לשמאל.",
    }
}

/// The languages there are, each with its [`sample`].
pub fn samples() -> impl Iterator<Item = (Language, &'static str)> {
    LANGUAGES.into_iter().map(|l| (l, sample(l)))
}

fn letters(text: &str) -> usize {
    text.chars().filter(|c| c.is_alphabetic()).count()
}

/// What the generator and the embedder speak.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelLanguages {
    pub generator: Speaks,
    pub embedder: Speaks,
}

impl Default for ModelLanguages {
    fn default() -> Self {
        Self { generator: Speaks::unknown(), embedder: Speaks::unknown() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_says_first_then_the_gguf() {
        let (config, gguf) = (vec!["he".to_string()], vec!["en".to_string()]);
        let speaks = Speaks::from_lists(Some(&config), Some(&gguf)).unwrap();
        assert_eq!(speaks.by, SaidBy::Config);
        assert!(speaks.speaks(Language::Hebrew));
        let speaks = Speaks::from_lists(None, Some(&gguf)).unwrap();
        assert_eq!(speaks.by, SaidBy::Gguf);
        assert!(!speaks.speaks(Language::Hebrew) && speaks.speaks(Language::English));
        let french = Speaks::said(&["fr".to_string()], SaidBy::Gguf);
        assert!(french.speaks(Language::English), "Lore's English holds French: nothing is held back");
        assert!(Speaks::said(&["multilingual".to_string()], SaidBy::Gguf).speaks(Language::Hebrew));
        assert_eq!(Speaks::from_lists(None, None), None);
        assert!(Speaks::unknown().speaks(Language::Hebrew), "nobody said: nothing is held back");
    }

    #[test]
    fn a_tokenizer_that_splits_a_language_letter_by_letter_does_not_speak_it() {
        // MiniLM's WordPiece tokenizer: 36 tokens for the Hebrew sentence's 34 letters, 13
        // for the English one's 52 (counted by llama.cpp).
        let minilm = Speaks::from_token_counts(&[(Language::English, 13), (Language::Hebrew, 36)]);
        assert!(minilm.speaks(Language::English));
        assert!(!minilm.speaks(Language::Hebrew));
        // A multilingual one: about one token a word.
        let xlmr = Speaks::from_token_counts(&[(Language::English, 14), (Language::Hebrew, 10)]);
        assert!(xlmr.speaks(Language::Hebrew));
        let bytes = Speaks::from_token_counts(&[(Language::English, 66), (Language::Hebrew, 80)]);
        assert!(bytes.speaks(Language::English) && !bytes.speaks(Language::Hebrew), "English is never guessed away");
        assert_eq!(letters(sample(Language::Hebrew)), 34);
        assert!(minilm.describe("models.embedder").starts_with("en (its tokenizer"), "{}", minilm.describe("x"));
    }
}
