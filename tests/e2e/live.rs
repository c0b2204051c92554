//! A knowledge base that changes under a running daemon: what `lore ingest` writes (here
//! through a connection of its own, as another process would) is answered from within
//! seconds, and a removed file stops being cited, with no restart.

use std::time::Duration;

use lore::ingest::Progress;
use lore_plugins::KbStore;
use lore_tests::daemon::TelegramDaemon;
use lore_tests::fake_telegram::{strip_tags, Chat};
use lore_tests::wait_until;

const ANSWER: Duration = Duration::from_secs(120);
const ZEBRAS: &str = "Zebras have black and white stripes. The stripes confuse biting flies, \
                      which land far less often on striped hides than on plain ones.\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_running_daemon_answers_from_a_new_ingest_and_forgets_a_removed_file() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join("bees.md"), "Honeybees tell each other where flowers are with the waggle dance.\n")
        .unwrap();
    let kbs = format!("knowledge_bases:\n  notes:\n    sources: [{}]\n", notes.display());
    let daemon = TelegramDaemon::start(dir.path(), &kbs, "notes", "").await;
    let app = &daemon.app;
    // `lore ingest` in another process: its own connection to the same data directory.
    let ingest = || async {
        let store = KbStore::open(&app.config.data_dir).await.unwrap();
        let kb = store.open_or_create("notes", lore_core::Embedder::dim(&app.embedder)).await.unwrap();
        lore::ingest::ingest(&kb, &app.embedder, std::slice::from_ref(&notes), &app.config.chunking, Progress::Quiet)
            .await
            .unwrap();
    };
    let abstained = app.config.retrieval.abstain_text.clone();
    let ask = |n: usize| {
        let (fake, abstained) = (&daemon.fake, &abstained);
        async move {
            fake.push_message(Chat::Private(7), 7, "Why do zebras have stripes?");
            let shown = || fake.shown_in(7).get(n).map(|m| strip_tags(m));
            let done = |m: &String| m.contains("Sources") || m == abstained;
            wait_until(ANSWER, "an answer", || shown().is_some_and(|m| done(&m))).await;
            shown().unwrap()
        }
    };
    let before = ask(0).await;
    assert!(!before.contains("zebras.md"), "{before}");

    std::fs::write(notes.join("zebras.md"), ZEBRAS).unwrap();
    ingest().await;
    tokio::time::sleep(lore_plugins::store::READ_CONSISTENCY + Duration::from_millis(500)).await;
    let after = ask(1).await;
    assert!(after.contains("zebras.md"), "the new file is not cited: {after}");

    std::fs::remove_file(notes.join("zebras.md")).unwrap();
    ingest().await;
    tokio::time::sleep(lore_plugins::store::READ_CONSISTENCY + Duration::from_millis(500)).await;
    let removed = ask(2).await;
    assert!(!removed.contains("zebras.md"), "a removed file is still cited: {removed}");
    daemon.stop().await;
}
