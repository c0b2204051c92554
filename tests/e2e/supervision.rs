//! What a long-running daemon does when a part of it breaks.

use std::time::Duration;

use lore_tests::daemon::{sample_kb, TelegramDaemon};
use lore_tests::fake_telegram::{strip_tags, Chat};
use lore_tests::wait_until;

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_generator_fails_the_question_in_words_and_the_daemon_exits_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TelegramDaemon::start(dir.path(), &sample_kb(), "bees", "").await;
    daemon.fake.push_message(Chat::Private(5), 5, "How do honeybees tell each other where the flowers are?");
    // Typing is shown when the question's turn comes; its reranking then runs in the engine.
    wait_until(Duration::from_secs(30), "the answer starts", || !daemon.fake.calls("sendChatAction").is_empty()).await;
    daemon.app.generator.as_ref().unwrap().crash_for_tests();
    let shown = || daemon.fake.shown_in(5).iter().map(|m| strip_tags(m)).collect::<Vec<_>>();
    wait_until(Duration::from_secs(60), "the asker is told", || shown().iter().any(|m| m.contains("(error "))).await;
    assert!(shown().iter().all(|m| !m.contains("panicked")), "internals reached the chat: {:?}", shown());
    let ended = daemon.exit().await.expect_err("the daemon exits with an error for its service manager");
    assert!(ended.to_string().contains("generator's thread died"), "{ended}");
}
