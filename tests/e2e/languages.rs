//! Knowledge bases in other languages than English. A Hebrew one on the real default
//! models: its language is detected at ingest, a question whose word carries a prefix the
//! passage lacks finds the passage by its words (which MiniLM's vectors cannot be relied
//! on to do), its bots speak Hebrew, and since SmolLM2 does not, they answer on Telegram
//! with the passage's own sentence. Multilingual models (random-weight XLM-R and mT5 from
//! `scripts/make_gguf.py`: no real one can be fetched here) run through the command line.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lore::app::{App, Load};
use lore::ingest::{ingest, Progress::Quiet, Settings};
use lore::question::router::Place;
use lore_knowledge::{Language, LanguageChoice, RetrieverConfig};
use lore_tests::daemon::TelegramDaemon;
use lore_tests::fake_telegram::{strip_tags, Chat};
use lore_tests::models::{config, config_with_models_section, model};
use lore_tests::{lore_binary, wait_until};

const NOTES: [(&str, &str); 5] = [
    ("cats.txt", "חתולים ישנים רוב שעות היום ואוהבים לשבת בשמש ליד החלון.\n"),
    ("bees.txt", "הדבורים רוקדות את ה-waggle dance כדי לסמן פרחים במרחק 150–200 מטר מהכוורת.\n"),
    ("script.txt", "עברית היא שפה שמית, והיא נכתבת מימין לשמאל.\n"),
    ("bread.txt", "לחם טרי נאפה בתנור חם מוקדם בבוקר, לפני שהחנות נפתחת.\n"),
    ("trains.txt", "הרכבת לירושלים יוצאת מהתחנה המרכזית פעם בשעה.\n"),
];

/// "In which direction does one write in Hebrew?": "בעברית" where the passage says "עברית".
const QUESTION: &str = "באיזה כיוון כותבים בעברית?";

/// The notes written to `dir/kb`.
fn notes(dir: &Path, kb: &str) -> std::path::PathBuf {
    let notes = dir.join(kb);
    std::fs::create_dir_all(&notes).unwrap();
    for (name, text) in NOTES {
        std::fs::write(notes.join(name), text).unwrap();
    }
    notes
}

async fn ingested(dir: &Path, kb: &str, language: LanguageChoice) -> App {
    let notes = notes(dir, kb);
    let app = App::load(config(dir, ""), Load::WithoutGenerator).await.unwrap();
    let store = app.kb_for_ingest(kb).await.unwrap();
    let settings = Settings { language, ..Settings::new(&app.config.chunking) };
    ingest(&store, app.embedder.as_ref(), &[notes], &settings, Quiet).await.unwrap();
    app
}

/// Where bot-less answers come from in `kb`: `retriever`, no reranker, the language left
/// to the knowledge base.
fn place(app: &App, kb: &str, retriever: RetrieverConfig) -> Place {
    let mut retrieval = app.config.retrieval.clone();
    retrieval.retriever = retriever;
    retrieval.rerankers.clear();
    Place { kb: kb.into(), retrieval, template: Default::default(), lora: None, language: None }
}

/// The sources `retriever` finds for `question` in `kb`, best first.
async fn sources(app: &App, kb: &str, retriever: RetrieverConfig, question: &str) -> Vec<String> {
    let hits = app.chain(place(app, kb, retriever)).unwrap().retrieve(question).await.unwrap();
    hits.iter().map(|h| Path::new(&h.chunk.source).file_name().unwrap().to_string_lossy().into_owned()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hebrew_question_with_a_prefix_finds_the_passage_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = ingested(dir.path(), "notes", LanguageChoice::Auto).await;
    let kb = app.kb("notes").unwrap().require().await.unwrap();
    assert_eq!(kb.language().await.unwrap(), Some(Language::Hebrew), "detected at ingest and stored");

    let by_words = sources(&app, "notes", RetrieverConfig::Fulltext, QUESTION).await;
    assert_eq!(by_words.first().map(String::as_str), Some("script.txt"), "{by_words:?}");
    let hybrid = sources(&app, "notes", RetrieverConfig::default(), QUESTION).await;
    assert_eq!(hybrid.first().map(String::as_str), Some("script.txt"), "{hybrid:?}");
    // Its answers are in Hebrew: the built-in system message and "I don't know".
    let chain = app.chain(place(&app, "notes", RetrieverConfig::default())).unwrap();
    let (settings, voice) = chain.voice(chain.language().await, chain.kb_language().await);
    assert!(voice.template.system.starts_with("ענה על השאלה"), "{}", voice.template.system);
    assert!(settings.abstain_text.starts_with("אני לא יודע"), "{}", settings.abstain_text);
}

#[tokio::test(flavor = "multi_thread")]
async fn searched_as_english_words_the_same_question_finds_nothing_by_its_words() {
    let dir = tempfile::tempdir().unwrap();
    let app = ingested(dir.path(), "notes", LanguageChoice::Fixed(Language::English)).await;
    assert_eq!(app.kb("notes").unwrap().require().await.unwrap().language().await.unwrap(), Some(Language::English));
    let by_words = sources(&app, "notes", RetrieverConfig::Fulltext, QUESTION).await;
    assert!(by_words.is_empty(), "LanceDB's own words cannot match בעברית to עברית: {by_words:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_telegram_a_generator_that_does_not_speak_hebrew_answers_with_the_passages_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let notes = notes(dir.path(), "notes");
    let extra = format!("knowledge_bases:\n  notes:\n    sources: [{}]\n", notes.display());
    let asker = TelegramDaemon::start(dir.path(), &extra, "notes", "").await;
    // SmolLM2's GGUF says `general.languages: [en]`; MiniLM's says nothing, and its
    // tokenizer splits Hebrew letter by letter.
    let languages = &asker.app.languages;
    assert!(!languages.generator.speaks(Language::Hebrew) && languages.generator.speaks(Language::English));
    assert!(!languages.embedder.speaks(Language::Hebrew) && languages.embedder.speaks(Language::English));
    let chain = asker.app.chain(place(&asker.app, "notes", RetrieverConfig::default())).unwrap();
    let (settings, voice) = chain.voice(Language::Hebrew, Language::Hebrew);
    assert_eq!((settings.answer_style, voice.quote_by_words), (lore::config::AnswerStyle::Quote, true));
    // A bot answering in English from it: English prompts, but SmolLM2 still cannot read
    // the Hebrew passages, so it quotes them, chosen by words.
    let (settings, voice) = chain.voice(Language::English, Language::Hebrew);
    assert!(!voice.template.system.starts_with("ענה"), "{}", voice.template.system);
    assert_eq!((settings.answer_style, voice.quote_by_words), (lore::config::AnswerStyle::Quote, true));
    let (settings, voice) = chain.voice(Language::English, Language::English);
    assert_eq!(
        (settings.answer_style, voice.quote_by_words),
        (lore::config::AnswerStyle::Generate, false),
        "as before"
    );

    asker.fake.push_message(Chat::Private(7), 7, QUESTION);
    let shown = || asker.fake.shown_in(7).iter().map(|m| strip_tags(m)).collect::<Vec<_>>();
    wait_until(Duration::from_secs(60), "the answer arrives", || shown().iter().any(|m| m.contains("script.txt")))
        .await;
    let answer = shown().concat();
    assert!(answer.contains("והיא נכתבת מימין לשמאל"), "the passage's own sentence, not a made-up one: {answer}");
    assert!(!answer.contains("לחם") && !answer.contains("רכבת"), "nothing from the other notes: {answer}");
    // "Who won the 1986 World Cup?": no sentence holds its words, so no sentence is quoted
    // as if it answered; the bot says it does not know, in Hebrew.
    asker.fake.push_message(Chat::Private(8), 8, "מי זכה במונדיאל של 1986?");
    let shown = || asker.fake.shown_in(8).iter().map(|m| strip_tags(m)).collect::<Vec<_>>();
    wait_until(Duration::from_secs(60), "the answer arrives", || !shown().is_empty()).await;
    let answer = shown().concat();
    assert!(answer.starts_with("אני לא יודע"), "{answer}");
    // "Why do the bees dance?": the sentence mixes Latin words and a range of numbers into
    // Hebrew; isolates keep them in order as Telegram lays the line out right to left.
    asker.fake.push_message(Chat::Private(9), 9, "למה הדבורים רוקדות?");
    let shown = || asker.fake.shown_in(9).iter().map(|m| strip_tags(m)).collect::<Vec<_>>();
    wait_until(Duration::from_secs(60), "the answer arrives", || shown().iter().any(|m| m.contains("bees.txt"))).await;
    let answer = shown().concat();
    assert!(
        answer.contains("\u{2066}waggle dance\u{2069}") && answer.contains("\u{2066}150–200\u{2069}"),
        "{answer:?}"
    );
    asker.stop().await;
}

/// `lore --config CONFIG ARGS…`, which must succeed: its standard output.
fn lore(config: &Path, args: &[&str]) -> String {
    let out = Command::new(lore_binary()).arg("--config").arg(config).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "lore {args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn a_multilingual_embedder_and_generator_run_through_check_ingest_and_ask() {
    let dir = tempfile::tempdir().unwrap();
    let notes = notes(dir.path(), "notes");
    let kb = format!(
        "retrieval:\n  rerankers: []\n  min_score: 0\nknowledge_bases:\n  notes:\n    sources: [{}]\nbots:\n  he:\n    knowledge_base: notes\n    adapter: {{ type: console }}\n",
        notes.display()
    );
    let models = format!(
        "  generator:\n    path: {}\n    context_tokens: 512\n    max_answer_tokens: 16\n  embedder:\n    path: {}\n",
        model("mt5-tiny.F32.gguf").display(),
        model("xlmr-tiny.F32.gguf").display()
    );
    let multilingual = config_with_models_section(dir.path(), &models, &kb);
    lore(&multilingual.file, &["ingest", "--kb", "notes"]);
    let check = lore(&multilingual.file, &["check"]);
    let said = "languages: en, he, ar, ru (the GGUF's general.languages)";
    assert_eq!(check.matches(said).count(), 2, "the generator's and the embedder's: {check}");
    assert!(check.contains("in Hebrew") && !check.contains("does not speak"), "{check}");
    // Random weights write random words; what matters is that both models run, and that
    // the answer is generated (a generator that speaks Hebrew is not held to quotes).
    let asked = lore(&multilingual.file, &["ask", "--bot", "he", QUESTION]);
    assert!(asked.contains("script.txt"), "retrieved by its words and shown as the source: {asked}");
    assert!(!asked.contains("והיא נכתבת מימין לשמאל"), "generated, not quoted: {asked}");

    // The default models on the same knowledge base: `lore check` says what they cannot do.
    let english = tempfile::tempdir().unwrap();
    let default_models = config(english.path(), &kb);
    lore(&default_models.file, &["ingest", "--kb", "notes"]);
    let check = lore(&default_models.file, &["check"]);
    assert!(check.contains("languages: en (the GGUF's general.languages)"), "SmolLM2's: {check}");
    assert!(check.contains("languages: en (its tokenizer"), "MiniLM's, by its tokenizer: {check}");
    assert!(
        check.contains("the generator does not speak Hebrew") && check.contains("answers quote the passage"),
        "{check}"
    );
    assert!(check.contains("the embedder does not speak Hebrew") && check.contains("leans on full text"), "{check}");
    // `lore eval --gold` answers as the bot does: with the quote.
    let gold = english.path().join("gold.jsonl");
    let case = serde_json::json!({"question": QUESTION, "answer": "מימין לשמאל", "source": "script.txt"});
    std::fs::write(&gold, format!("{case}\n")).unwrap();
    let details = english.path().join("details.jsonl");
    let (gold, details) = (gold.to_str().unwrap(), details.to_str().unwrap());
    lore(&default_models.file, &["eval", "--gold", gold, "--bot", "he", "--json", "--details", details]);
    let asked: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(details).unwrap()).unwrap();
    assert_eq!(asked["answer"], "עברית היא שפה שמית, והיא נכתבת מימין לשמאל.", "{asked}");
}

/// The chat page in Chromium with a Hebrew bot: the answer (the passage's own sentence, as
/// SmolLM2 does not speak Hebrew) and its source are laid out right to left, and the
/// passage opens with the sentence marked. Screenshots `chat-page-hebrew*.png`.
#[tokio::test(flavor = "multi_thread")]
async fn the_chat_page_shows_a_hebrew_answer_right_to_left() {
    let dir = tempfile::tempdir().unwrap();
    let port = lore_tests::free_port();
    let notes = notes(dir.path(), "notes");
    let config = format!(
        "server:\n  listen: 127.0.0.1:{port}\nknowledge_bases:\n  notes:\n    sources: [{}]\n",
        notes.display()
    );
    let daemon = TelegramDaemon::start(dir.path(), &config, "notes", "").await;
    let url = format!("http://127.0.0.1:{port}/");
    let (seen, screenshot) = crate::http_api::in_chromium("chat_page.py", &url, QUESTION, "chat-page-hebrew").await;

    assert_eq!(seen["errors"], serde_json::json!([]), "{seen}");
    let answer = seen["answer"].as_str().unwrap();
    assert!(answer.contains("והיא נכתבת מימין לשמאל"), "{seen}");
    assert!(seen["sources"][0].as_str().unwrap().contains("script.txt"), "{seen}");
    assert!(seen["passage_marked"][0].as_str().unwrap_or_default().contains("מימין לשמאל"), "{seen}");
    let d = &seen["directions"];
    for shown in ["questions", "answers"] {
        for e in d[shown].as_array().unwrap() {
            assert_eq!((&e[0], &e[1]), (&serde_json::json!("auto"), &serde_json::json!("rtl")), "{shown}: {d}");
        }
    }
    assert!(std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 1000), "a screenshot for people");
    daemon.stop().await;
}
