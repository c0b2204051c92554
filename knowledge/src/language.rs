//! The language of a knowledge base: which full-text words its passages and questions are
//! searched by (see [`crate::hebrew`]), and, for the daemon, which prompts answer from it.
//! Stored with the knowledge base (its table's config), so whoever searches it knows.

use std::fmt;

/// A language Lore searches (and prompts) in its own way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Language {
    /// LanceDB's own full-text words (English stemming and stop words): what every
    /// knowledge base had before languages were told apart.
    #[default]
    English,
    /// Hebrew words: marks dropped, final letters plain, prefixes stripped too.
    Hebrew,
}

/// The languages there are, by code.
pub const LANGUAGES: [Language; 2] = [Language::English, Language::Hebrew];

impl Language {
    /// Its ISO 639-1 code, as written in the config and stored with a knowledge base.
    pub fn code(self) -> &'static str {
        match self {
            Language::English => "en",
            Language::Hebrew => "he",
        }
    }

    /// Its name in English, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Language::English => "English",
            Language::Hebrew => "Hebrew",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        LANGUAGES.into_iter().find(|l| l.code() == code)
    }

    /// The language `text` is written in, by `whatlang`'s detector: Hebrew when it says
    /// so, English for anything else (the searches every knowledge base had before).
    pub fn detect(text: &str) -> Self {
        match whatlang::detect_lang(text) {
            Some(whatlang::Lang::Heb) => Language::Hebrew,
            _ => Language::English,
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A knowledge base's `language:` setting: one language, or `auto`, detected from what is
/// ingested first and kept from then on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LanguageChoice {
    #[default]
    Auto,
    Fixed(Language),
}

impl std::str::FromStr for Language {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Language::from_code(s).ok_or_else(|| format!("unknown language {s:?}: use {}", codes()))
    }
}

impl<'de> serde::Deserialize<'de> for Language {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The codes there are, for messages: "en or he".
fn codes() -> String {
    let codes: Vec<&str> = LANGUAGES.iter().map(|l| l.code()).collect();
    match codes.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

impl std::str::FromStr for LanguageChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            return Ok(Self::Auto);
        }
        Language::from_code(s)
            .map(Self::Fixed)
            .ok_or_else(|| format!("unknown language {s:?}: use {}, or auto (detected at ingest)", codes()))
    }
}

impl<'de> serde::Deserialize<'de> for LanguageChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hebrew_text_is_detected_and_anything_else_searches_as_before() {
        assert_eq!(Language::detect("אז יש לכם קובץ טקסט. במקום לקרוא אותו אתם רוצים צ'אט-בוט"), Language::Hebrew);
        assert_eq!(Language::detect("Otters float on their backs while they sleep."), Language::English);
        assert_eq!(Language::detect("Les loutres flottent sur le dos pendant qu'elles dorment."), Language::English);
        assert_eq!(Language::detect(""), Language::English);
    }

    #[test]
    fn choices_read_from_their_codes() {
        assert_eq!("he".parse(), Ok(LanguageChoice::Fixed(Language::Hebrew)));
        assert_eq!("en".parse(), Ok(LanguageChoice::Fixed(Language::English)));
        assert_eq!("auto".parse(), Ok(LanguageChoice::Auto));
        let e = "hebrew".parse::<LanguageChoice>().unwrap_err();
        assert_eq!(e, "unknown language \"hebrew\": use en or he, or auto (detected at ingest)");
        assert_eq!("fr".parse::<Language>().unwrap_err(), "unknown language \"fr\": use en or he");
    }
}
