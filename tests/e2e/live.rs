//! A knowledge base that changes under a running daemon: what `lore ingest` writes (here
//! through a connection of its own, as another process would) is answered from within
//! seconds, and a removed file stops being cited, with no restart. With `watch: true` the
//! daemon ingests the changes itself.

use std::time::Duration;

use lore::ingest::Progress;
use lore_knowledge::KbStore;
use lore_tests::daemon::TelegramDaemon;
use lore_tests::fake_telegram::{strip_tags, Chat};
use lore_tests::wait_until;

const ANSWER: Duration = Duration::from_secs(120);
const ZEBRAS: &str = "Zebras have black and white stripes. The stripes confuse biting flies, \
                      which land far less often on striped hides than on plain ones.\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_running_daemon_answers_from_a_new_ingest_and_forgets_a_removed_file() {
    let dir = tempfile::tempdir().unwrap();
    let notes = notes_about_bees(dir.path());
    let kbs = format!("knowledge_bases:\n  notes:\n    sources: [{}]\n", notes.display());
    let daemon = TelegramDaemon::start(dir.path(), &kbs, "notes", "").await;
    let app = &daemon.app;
    // `lore ingest` in another process: its own connection to the same data directory.
    let ingest = || async {
        let store = KbStore::open(app.config.data_dir.folder().unwrap()).await.unwrap();
        let kb = store.open_or_create("notes", app.embedder.dim()).await.unwrap();
        let settings = lore::ingest::Settings::new(&app.config.chunking);
        lore::ingest::ingest(&kb, app.embedder.as_ref(), std::slice::from_ref(&notes), &settings, Progress::Quiet)
            .await
            .unwrap();
    };
    let before = ask_about_zebras(&daemon, 0).await;
    assert!(!before.contains("zebras.md"), "{before}");
    zebras_come_and_go(&daemon, &notes, 1, |_| ingest()).await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watched_knowledge_base_follows_its_folder_without_an_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let notes = notes_about_bees(dir.path());
    let kbs = format!("knowledge_bases:\n  notes:\n    sources: [{}]\n    watch: true\n", notes.display());
    let daemon = TelegramDaemon::start(dir.path(), &kbs, "notes", "").await;
    let data_dir = daemon.app.config.data_dir.folder().unwrap();
    zebras_come_and_go(&daemon, &notes, 0, |present| wait_for_source(data_dir, "zebras.md", present)).await;
    daemon.stop().await;
}

/// Writes `zebras.md` into `notes`, then removes it; after each change, `reach` (given
/// whether the file is there) makes the change reach the knowledge base, and the next
/// answer (the `first_answer`th in the chat, then the one after) must cite the file or
/// not.
async fn zebras_come_and_go<F: std::future::Future<Output = ()>>(
    daemon: &TelegramDaemon,
    notes: &std::path::Path,
    first_answer: usize,
    reach: impl Fn(bool) -> F,
) {
    std::fs::write(notes.join("zebras.md"), ZEBRAS).unwrap();
    reach(true).await;
    tokio::time::sleep(lore_knowledge::store::READ_CONSISTENCY + Duration::from_millis(500)).await;
    let after = ask_about_zebras(daemon, first_answer).await;
    assert!(after.contains("zebras.md"), "the new file is not cited: {after}");

    std::fs::remove_file(notes.join("zebras.md")).unwrap();
    reach(false).await;
    tokio::time::sleep(lore_knowledge::store::READ_CONSISTENCY + Duration::from_millis(500)).await;
    let removed = ask_about_zebras(daemon, first_answer + 1).await;
    assert!(!removed.contains("zebras.md"), "a removed file is still cited: {removed}");
}

/// A folder `notes` in `dir` holding one note on bees.
fn notes_about_bees(dir: &std::path::Path) -> std::path::PathBuf {
    let notes = dir.join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join("bees.md"), "Honeybees tell each other where flowers are with the waggle dance.\n")
        .unwrap();
    notes
}

/// Asks why zebras have stripes and returns the `n`th answer shown in the private chat.
async fn ask_about_zebras(daemon: &TelegramDaemon, n: usize) -> String {
    let abstained = &daemon.app.config.retrieval.abstain_text;
    daemon.fake.push_message(Chat::Private(7), 7, "Why do zebras have stripes?");
    let shown = || daemon.fake.shown_in(7).get(n).map(|m| strip_tags(m));
    // An abstention ends with a hint at the nearest topic.
    let done = |m: &String| m.contains("Sources") || m.starts_with(abstained.as_str());
    wait_until(ANSWER, "an answer", || shown().is_some_and(|m| done(&m))).await;
    shown().unwrap()
}

/// Waits until knowledge base `notes` holds (or no longer holds) chunks of a file named
/// `name`, as the watcher's ingest writes them.
async fn wait_for_source(data_dir: &std::path::Path, name: &str, present: bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        // A fresh connection sees the latest commit at once.
        let kb = KbStore::open(data_dir).await.unwrap().open_kb("notes").await.unwrap().unwrap();
        let sources = kb.stored_places().await.unwrap();
        if sources.keys().any(|s| s.ends_with(name)) == present {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the watcher did not ingest the change to {name}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
