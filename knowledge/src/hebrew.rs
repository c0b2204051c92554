//! Hebrew for full-text search: the words a passage is indexed under and a question is
//! searched with, so that "בעברית" finds "עברית" and a pointed word finds its plain form.
//!
//! LanceDB's tokenizers split on letters and know nothing of Hebrew: its vowel points and
//! cantillation marks are not letters (a pointed word falls apart into single letters),
//! final letters differ from their other forms, and the one-letter words "and", "the",
//! "in", "as", "to", "from" and "that" (ו ה ב כ ל מ ש) are written joined to the next
//! word. [`search_words`] undoes that: marks dropped, final letters made plain, and each
//! word kept as written and also without its prefix letters. Both sides go through it, so
//! a prefix on either side still meets the bare word on the other.

/// The prefix chains stripped from a word: "and" (ו), then a "that"/"when" (ש, כש, מש,
/// לכש), then one of the/in/as/to/from (ה ב כ ל מ, or מה), each optional, in that order
/// ("וכשה" in "וכשהגענו": and-when-the). Letters in another order are the word's own.
const AND: [&str; 2] = ["", "ו"];
const THAT: [&str; 5] = ["", "ש", "כש", "מש", "לכש"];
const TO: [&str; 7] = ["", "ה", "ב", "כ", "ל", "מ", "מה"];

/// Letters a word keeps when its prefixes are stripped: a Hebrew root has three, so a
/// shorter rest would mostly be a root letter taken for a prefix ("מלך" is not "מ" + "לך").
const MIN_STEM_LETTERS: usize = 3;

/// Hebrew words that say nothing of what a sentence is about: pronouns, question words,
/// prepositions, "is"/"was", "not", "all". A sentence that shares only these with a
/// question does not answer it. Written plain (no final letters), as [`search_words`]
/// writes words; with a prefix ("ולא", "שהוא") they are still these words
/// ([`is_function_word`]).
pub const FUNCTION_WORDS: [&str; 72] = [
    "של",
    "שלו",
    "שלה",
    "את",
    "אתכ",
    "אותו",
    "אותה",
    "אותמ",
    "אותנ",
    "אותי",
    "אותנו",
    "על",
    "עליו",
    "עליה",
    "עמ",
    "אל",
    "מנ",
    "ממנו",
    "לו",
    "לה",
    "להמ",
    "להנ",
    "אצל",
    "כי",
    "גמ",
    "אמ",
    "האמ",
    "או",
    "לא",
    "כנ",
    "לכנ",
    "ככ",
    "אכ",
    "אז",
    "כדי",
    "זה",
    "זו",
    "זאת",
    "אלה",
    "הוא",
    "היא",
    "המ",
    "הנ",
    "אני",
    "אתה",
    "אנחנו",
    "מה",
    "מי",
    "איכ",
    "למה",
    "מתי",
    "איפה",
    "כמה",
    "איזה",
    "איזו",
    "אילו",
    "יש",
    "אינ",
    "היה",
    "היתה",
    "הייתה",
    "היו",
    "כל",
    "רק",
    "עוד",
    "אבל",
    "כמו",
    "אחרי",
    "לפני",
    "בינ",
    "עד",
    "אשר",
];

/// Whether `word` (as [`search_words`] writes it) is a function word, bare or behind any
/// chain of prefixes ("ולא", "שהוא", "בכל").
pub fn is_function_word(word: &str) -> bool {
    FUNCTION_WORDS.contains(&word)
        || prefix_chains().any(|chain| {
            !chain.is_empty() && word.strip_prefix(chain.as_str()).is_some_and(|rest| FUNCTION_WORDS.contains(&rest))
        })
}

/// Each word of `text` with its forms, as [`search_words`] makes them.
pub fn word_forms(text: &str) -> Vec<Vec<String>> {
    words(text).iter().map(|w| forms(w)).collect()
}

/// Every chain of prefix letters, the empty one included.
fn prefix_chains() -> impl Iterator<Item = String> {
    AND.iter().flat_map(|a| THAT.iter().flat_map(move |t| TO.iter().map(move |p| format!("{a}{t}{p}"))))
}

/// The words `text` is indexed or searched under, joined by spaces: lower case, Hebrew
/// marks dropped, final letters normalised, every Hebrew word also without its prefix
/// letters; Latin words and numbers as they are (lowered).
pub fn search_words(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for word in words(text) {
        for form in forms(&word) {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&form);
        }
    }
    out
}

/// The words of `text`: runs of letters and digits, with Hebrew marks removed, final
/// letters normalised and quotation marks inside a word (צ'אט, צה"ל) dropped. A word
/// that runs from Hebrew into Latin letters or digits ("לGPT") is split there.
fn words(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().filter(|c| !is_mark(*c)).collect();
    let mut out = Vec::new();
    let mut word = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_alphanumeric() {
            if word.chars().last().is_some_and(|last| is_hebrew_letter(last) != is_hebrew_letter(c)) {
                out.push(std::mem::take(&mut word));
            }
            word.extend(c.to_lowercase().map(plain_letter));
        } else if is_inner_quote(c)
            && chars.get(i.wrapping_sub(1)).is_some_and(|p| is_hebrew_letter(*p))
            && chars.get(i + 1).is_some_and(|n| is_hebrew_letter(*n))
        {
            // A geresh or gershayim inside a word is part of it: drop it, keep the word.
        } else if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    // A lone Hebrew letter is a prefix cut off by a hyphen ("ה-AI") or a letter used as a
    // numeral: nothing to search by.
    out.retain(|w| !(w.chars().count() == 1 && w.chars().all(is_hebrew_letter)));
    out
}

/// A word as written, then without each prefix chain it starts with (shortest first)
/// whose rest is a stem of at least [`MIN_STEM_LETTERS`].
fn forms(word: &str) -> Vec<String> {
    let mut out = vec![word.to_string()];
    if !word.chars().next().is_some_and(is_hebrew_letter) {
        return out;
    }
    let mut cuts: Vec<usize> = prefix_chains()
        .filter(|chain| !chain.is_empty() && word.starts_with(chain.as_str()))
        .map(|chain| chain.len())
        .filter(|&bytes| word[bytes..].chars().count() >= MIN_STEM_LETTERS)
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    out.extend(cuts.into_iter().map(|bytes| word[bytes..].to_string()));
    out
}

/// Hebrew points, cantillation and other marks written over or under letters (the
/// combining marks of the Hebrew block; maqaf, paseq and sof pasuq are punctuation).
fn is_mark(c: char) -> bool {
    matches!(c, '\u{0591}'..='\u{05BD}' | '\u{05BF}' | '\u{05C1}' | '\u{05C2}' | '\u{05C4}' | '\u{05C5}' | '\u{05C7}')
}

fn is_hebrew_letter(c: char) -> bool {
    matches!(c, '\u{05D0}'..='\u{05EA}' | '\u{05EF}'..='\u{05F2}' | '\u{FB1D}'..='\u{FB4F}')
}

/// Geresh, gershayim and the ASCII and typographic quotes that stand for them.
fn is_inner_quote(c: char) -> bool {
    matches!(c, '\'' | '"' | '\u{05F3}' | '\u{05F4}' | '\u{2019}' | '\u{201D}')
}

/// A final letter as its ordinary form (ך ם ן ף ץ → כ מ נ פ צ); other letters unchanged.
fn plain_letter(c: char) -> char {
    match c {
        'ך' => 'כ',
        'ם' => 'מ',
        'ן' => 'נ',
        'ף' => 'פ',
        'ץ' => 'צ',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::search_words;

    #[test]
    fn a_prefixed_word_is_indexed_attached_and_bare() {
        assert_eq!(search_words("בעברית"), "בעברית עברית");
        assert_eq!(search_words("והמודל"), "והמודל המודל מודל");
        // The question's prefix meets the passage's bare word, and the other way round.
        assert!(search_words("בעברית").split(' ').any(|w| w == search_words("עברית")));
    }

    #[test]
    fn a_chain_of_prefixes_is_stripped_letter_by_letter_down_to_a_three_letter_stem() {
        assert_eq!(search_words("וכשהגענו"), "וכשהגענו כשהגענו שהגענו הגענו גענו");
        // "מלך" (king) is not "מ" + "לך": a stem keeps three letters.
        assert_eq!(search_words("מלך"), "מלכ");
        assert_eq!(search_words("המלך"), "המלכ מלכ");
        // Only prefix letters are stripped, and only from the front.
        assert_eq!(search_words("גדול"), "גדול");
        assert_eq!(search_words("אבל"), "אבל");
        // Short words stay whole.
        assert_eq!(search_words("של מה כל"), "של מה כל");
    }

    #[test]
    fn final_letters_become_their_ordinary_forms() {
        assert_eq!(search_words("ך ם ן ף ץ"), "");
        assert_eq!(search_words("מלכים ילדים"), "מלכימ לכימ ילדימ");
        assert_eq!(search_words("ארץ"), "ארצ");
        // So a word ending in a final letter meets its inflection with the ordinary one.
        assert_eq!(search_words("ארץ"), search_words("ארצ"));
    }

    #[test]
    fn points_and_cantillation_are_dropped() {
        assert_eq!(search_words("שָׁלוֹם"), search_words("שלום"));
        assert_eq!(search_words("בְּרֵאשִׁ֖ית בָּרָ֣א"), "בראשית ראשית ברא");
        // Maqaf and sof pasuq are punctuation: they part words.
        assert_eq!(search_words("אֶת־הָאָֽרֶץ׃"), "את הארצ ארצ");
    }

    #[test]
    fn hebrew_latin_and_digits_mix() {
        assert_eq!(search_words("מודל GPT-3 של 20 מיליארד"), "מודל ודל gpt 3 של 20 מיליארד יליארד");
        // A prefix joined to a Latin word or a number parts from it, and is not a word.
        assert_eq!(search_words("לGPT ב-2023 ה-AI"), "gpt 2023 ai");
        assert_eq!(search_words("Lore's ChatGPT"), "lore s chatgpt");
    }

    #[test]
    fn quotes_inside_a_hebrew_word_belong_to_it() {
        assert_eq!(search_words("צ'אט-בוט"), "צאט בוט");
        assert_eq!(search_words("צה\"ל"), "צהל");
        assert_eq!(search_words("צ׳אט"), "צאט");
        assert_eq!(search_words("\"שלום\""), "שלומ לומ");
        assert_eq!(search_words("'שאלה'"), "שאלה אלה");
    }
}
