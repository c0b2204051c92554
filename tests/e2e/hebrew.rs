//! A Hebrew knowledge base on the real default embedder: its language is detected at
//! ingest, a question whose word carries a prefix the passage lacks finds the passage by
//! its words (which MiniLM's vectors cannot be relied on to do), and its bots speak Hebrew.

use std::path::Path;

use lore::app::{App, Load};
use lore::ingest::{ingest, Progress::Quiet, Settings};
use lore::question::router::Place;
use lore_knowledge::{Language, LanguageChoice, RetrieverConfig};
use lore_tests::models::config;

const NOTES: [(&str, &str); 4] = [
    ("cats.txt", "חתולים ישנים רוב שעות היום ואוהבים לשבת בשמש ליד החלון.\n"),
    ("script.txt", "עברית היא שפה שמית, והיא נכתבת מימין לשמאל.\n"),
    ("bread.txt", "לחם טרי נאפה בתנור חם מוקדם בבוקר, לפני שהחנות נפתחת.\n"),
    ("trains.txt", "הרכבת לירושלים יוצאת מהתחנה המרכזית פעם בשעה.\n"),
];

/// "In which direction does one write in Hebrew?": "בעברית" where the passage says "עברית".
const QUESTION: &str = "באיזה כיוון כותבים בעברית?";

async fn ingested(dir: &Path, kb: &str, language: LanguageChoice) -> App {
    let notes = dir.join(kb);
    std::fs::create_dir_all(&notes).unwrap();
    for (name, text) in NOTES {
        std::fs::write(notes.join(name), text).unwrap();
    }
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
    let (settings, template) = chain.voice(chain.language().await);
    assert!(template.system.starts_with("ענה על השאלה"), "{}", template.system);
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
