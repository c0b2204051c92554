//! What a long-running daemon does when a part of it breaks.

use std::time::Duration;

use lore::question::router::RESTARTING;
use lore_tests::daemon::{sample_kb, TelegramDaemon};
use lore_tests::fake_telegram::{strip_tags, Chat, Fault};
use lore_tests::wait_until;

const QUESTION: &str = "How do honeybees tell each other where the flowers are?";

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_generator_fails_the_question_in_words_and_the_daemon_exits_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = TelegramDaemon::start(dir.path(), &sample_kb(), "bees", "").await;
    daemon.fake.push_message(Chat::Private(5), 5, QUESTION);
    // Typing is shown when the question's turn comes; its reranking then runs in the engine.
    wait_until(Duration::from_secs(30), "the answer starts", || !daemon.fake.calls("sendChatAction").is_empty()).await;
    daemon.app.local_generator.as_ref().unwrap().crash_for_tests();
    let shown = || daemon.fake.shown_in(5).iter().map(|m| strip_tags(m)).collect::<Vec<_>>();
    wait_until(Duration::from_secs(60), "the asker is told", || shown().iter().any(|m| m.contains("(error "))).await;
    assert!(shown().iter().all(|m| !m.contains("panicked")), "internals reached the chat: {:?}", shown());
    let ended = daemon.exit().await.expect_err("the daemon exits with an error for its service manager");
    assert!(ended.to_string().contains("generator's thread died"), "{ended}");
}

/// The asker's chat as they see it: text only.
fn chat(daemon: &TelegramDaemon, id: i64) -> Vec<String> {
    daemon.fake.shown_in(id).iter().map(|m| strip_tags(m)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_lets_the_answer_in_progress_finish_within_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("shutdown_grace_seconds: 60\n{}", sample_kb());
    let mut daemon = TelegramDaemon::start(dir.path(), &config, "bees", "").await;
    daemon.fake.push_message(Chat::Private(5), 5, QUESTION);
    wait_until(Duration::from_secs(30), "the answer starts", || !daemon.fake.calls("sendChatAction").is_empty()).await;
    daemon.stop_signal();
    assert!(chat(&daemon, 5).iter().all(|m| !m.contains("Sources")), "finished before the stop: proves nothing");
    daemon.exit().await.expect("exit code 0");
    let shown = chat(&daemon, 5);
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(shown[0].contains("Sources") && shown[0].contains("honeybees.md"), "a complete answer: {shown:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_past_the_grace_tells_the_asker_to_ask_again_in_place_of_the_partial() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("shutdown_grace_seconds: 1\n{}", sample_kb());
    let mut daemon = TelegramDaemon::start(dir.path(), &config, "bees", "").await;
    // Telegram does not answer the typing notice: the answer is stuck there (for the
    // client's timeout, 15 s) when the stop comes.
    daemon.fake.inject("sendChatAction", 1, Fault::Hang);
    daemon.fake.push_message(Chat::Private(5), 5, QUESTION);
    wait_until(Duration::from_secs(30), "the answer starts", || {
        daemon.fake.requests().iter().any(|r| r.path == "sendChatAction")
    })
    .await;
    let stopped = std::time::Instant::now();
    daemon.stop_signal();
    daemon.exit().await.expect("exit code 0");
    assert!(stopped.elapsed() < Duration::from_secs(8), "stopped after {:?}", stopped.elapsed());
    assert_eq!(chat(&daemon, 5), vec![RESTARTING]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bot_whose_adapter_fails_at_start_is_restarted_while_the_others_answer() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("LORE_TEST_REVOKED_TOKEN", "999:revoked");
    let broken = "  revoked:\n    knowledge_base: bees\n    adapter:\n      type: telegram\n      token_env: LORE_TEST_REVOKED_TOKEN\n      api_url: {api}\n";
    let daemon = TelegramDaemon::start(dir.path(), &sample_kb(), "bees", broken).await;
    daemon.fake.push_message(Chat::Private(5), 5, QUESTION);
    wait_until(Duration::from_secs(60), "the working bot answers", || {
        chat(&daemon, 5).iter().any(|m| m.contains("Sources"))
    })
    .await;
    // Refused at once, started again after a second (then two, four...).
    let refusals = || daemon.fake.requests().iter().filter(|r| r.path == "getMe" && r.status == 401).count();
    wait_until(Duration::from_secs(10), "the failed adapter is started again", || refusals() >= 2).await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_embedder_fails_retrieval_in_words_and_the_daemon_exits_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = TelegramDaemon::start(dir.path(), &sample_kb(), "bees", "").await;
    let embedder = daemon.app.local_embedder.clone().expect("the embedder runs here");
    embedder.crash_for_tests();
    tokio::time::timeout(Duration::from_secs(10), embedder.died().cancelled()).await.expect("its death is told");
    // Nothing waits for it for ever: what asks it now is told it stopped.
    let error = daemon.app.embedder.embed(&[QUESTION.to_string()]).await.unwrap_err();
    assert!(error.to_string().contains("the embedder has stopped"), "{error}");
    let ended = daemon.exit().await.expect_err("the daemon exits with an error for its service manager");
    assert!(ended.to_string().contains("embedder's thread died"), "{ended}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_cross_encoder_is_told_and_fails_its_requests_in_words() {
    use lore_core::PairScorer;
    let reranker =
        lore_engine::LlamaCrossEncoder::load(&lore_engine::EmbedderConfig::new(lore_tests::models::reranker_path()))
            .unwrap();
    reranker.crash_for_tests();
    tokio::time::timeout(Duration::from_secs(10), reranker.died().cancelled()).await.expect("its death is told");
    let error = reranker.score_pairs("bees?", &["Bees dance.".to_string()]).await.unwrap_err();
    assert!(error.to_string().contains("the reranker has stopped"), "{error}");
}
