//! `kill -9` in the middle of an ingest: the previous content is still retrieved, by
//! vector and by full-text search, and the next run completes the work, its full-text
//! index included.
//!
//! The killed ingest is a real process: this test binary started again to run
//! [`ingest_child`] alone, as `lore ingest` would run (the `lore` binary itself is not
//! built for the tests).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lore::app::{App, Load};
use lore::config::Config;
use lore::ingest::{ingest, Progress, Settings, BATCH_CHUNKS};
use lore_knowledge::{KbStore, KnowledgeBase};
use lore_tests::models::config;

/// The config file the child process ingests with (its knowledge base `big`).
const CHILD_CONFIG: &str = "LORE_TEST_INGEST_CONFIG";
const OLD: &str = "Alpacas hum softly when they are content, and shriek when a fox comes near.\n";
const NEW: &str = "Axolotls regrow lost legs, hearts and even parts of their brains.\n";
/// Files and paragraphs written for the second run: one sentence each, so one chunk
/// each; many batches, so the kill lands after the first batch and well before the last.
const FILES: usize = 24;
const PARAGRAPHS: usize = 32;

/// Not a test on its own: the ingest process that the test below starts and kills.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "the child process of an_ingest_killed_midway_keeps_the_old_content_and_the_rerun_completes_it"]
async fn ingest_child() {
    let file = std::env::var(CHILD_CONFIG).expect("run by the crash test, which sets LORE_TEST_INGEST_CONFIG");
    let config = Config::load(Path::new(&file)).unwrap();
    let settings = Settings::for_kb(&config, "big");
    let sources = config.knowledge_bases["big"].sources.clone();
    let app = App::load(config, Load::WithoutGenerator).await.unwrap();
    let kb = app.kb_for_ingest("big").await.unwrap();
    ingest(&kb, app.embedder.as_ref(), &sources, &settings, Progress::Quiet).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ingest_killed_midway_keeps_the_old_content_and_the_rerun_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("alpha.md"), OLD).unwrap();
    let kbs = format!(
        "knowledge_bases:\n  big:\n    sources: [{}]\n    chunking: {{max_tokens: 48, overlap_tokens: 0, unit: sentence}}\n",
        docs.display()
    );
    let app = App::load(config(dir.path(), &kbs), Load::WithoutGenerator).await.unwrap();
    let settings = Settings::for_kb(&app.config, "big");
    let kb = app.kb_for_ingest("big").await.unwrap();
    ingest(&kb, app.embedder.as_ref(), std::slice::from_ref(&docs), &settings, Progress::Quiet).await.unwrap();
    let before = kb.version().await.unwrap();

    std::fs::write(docs.join("alpha.md"), NEW).unwrap();
    write_many_files(&docs);
    let mut child = start_child(&app.config.file);
    wait_for_a_commit(app.config.data_dir.folder().unwrap(), before, &mut child).await;
    assert!(child.try_wait().unwrap().is_none(), "the ingest finished before it could be killed");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let kb = open(app.config.data_dir.folder().unwrap()).await;
    let written = kb.count().await.unwrap();
    assert!(written > 1 && written < FILES * PARAGRAPHS, "killed after {written} chunks: not midway");
    let old_vector = app.embedder.embed(&[OLD.to_string()]).await.unwrap().remove(0);
    let by_vector = kb.search_vector(&old_vector, 1).await.unwrap();
    assert_eq!(by_vector[0].chunk.text, OLD.trim(), "the old content is not found by vector");
    let by_words = kb.search_fulltext("alpacas hum", &old_vector, 3).await.unwrap();
    assert!(by_words.iter().any(|h| h.chunk.text == OLD.trim()), "the old content is not found by full text");

    let rerun =
        ingest(&kb, app.embedder.as_ref(), std::slice::from_ref(&docs), &settings, Progress::Quiet).await.unwrap();
    assert!(
        rerun.chunks_embedded + written <= FILES * PARAGRAPHS + 2,
        "the rerun re-embedded what was written: {rerun}"
    );
    assert_eq!(rerun.chunks_removed, 1, "the old alpha.md chunk: {rerun}");
    let kb = open(app.config.data_dir.folder().unwrap()).await;
    assert_eq!(kb.count().await.unwrap(), FILES * PARAGRAPHS + 1);
    assert!(kb.fulltext_index_is_current().await.unwrap(), "the full-text index misses rows after the rerun");
    let last = format!("zircon{}x{}", FILES - 1, PARAGRAPHS - 1);
    let hits = kb.search_fulltext(&last, &old_vector, 3).await.unwrap();
    assert!(hits.first().is_some_and(|h| h.chunk.text.contains(&last)), "{last} is not found by full text");
    assert!(kb.search_fulltext("alpacas", &old_vector, 3).await.unwrap().iter().all(|h| h.chunk.text != OLD.trim()));
    let again =
        ingest(&kb, app.embedder.as_ref(), std::slice::from_ref(&docs), &settings, Progress::Quiet).await.unwrap();
    assert_eq!((again.changed_files, again.chunks_embedded), (0, 0), "the rerun left work: {again}");
}

/// Paragraphs of a few words with one word found nowhere else (`zircon{file}x{paragraph}`).
fn write_many_files(docs: &Path) {
    let animals = ["otter", "heron", "badger", "lynx", "marten", "ibis", "stoat", "vole"];
    for f in 0..FILES {
        let text: Vec<String> = (0..PARAGRAPHS)
            .map(|p| {
                let animal = animals[(f + p) % animals.len()];
                format!("Note {f}.{p}: the {animal} near zircon{f}x{p} was seen {p} times in week {f}.")
            })
            .collect();
        std::fs::write(docs.join(format!("notes-{f:02}.md")), text.join("\n\n") + "\n").unwrap();
    }
}

fn start_child(config: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "interrupted::ingest_child", "--ignored", "--nocapture", "--test-threads", "1"])
        .env(CHILD_CONFIG, config)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until the child has committed its first batch (a new table version).
async fn wait_for_a_commit(data_dir: &Path, before: u64, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        // A fresh connection each time: an open one may see other processes' commits late.
        if open(data_dir).await.version().await.unwrap() > before {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the ingest process ended ({status}) before its first commit was seen");
        }
        assert!(Instant::now() < deadline, "no batch of {BATCH_CHUNKS} chunks written in 5 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn open(data_dir: &Path) -> KnowledgeBase {
    KbStore::open(data_dir).await.unwrap().open_kb("big").await.unwrap().expect("the knowledge base exists")
}
