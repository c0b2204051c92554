//! Generation on a pool of OpenAI-compatible engines (`lore-remote`) against fake servers
//! that speak the real streamed format: failing, dropping streams, slow, coming back.

use std::time::Duration;

use futures::future::join_all;
use lore_core::{ChatModel, GenerateRequest, PromptText, Sampling};
use lore_remote::{RemoteGenerator, RemoteSettings, RETRY_NOTE};
use lore_tests::daemon::{sample_kb, TelegramDaemon};
use lore_tests::fake_openai::{Behaviour, FakeOpenAi, ANSWER};
use lore_tests::fake_telegram::{strip_tags, Chat};
use lore_tests::models::{generator_path, model_name};
use lore_tests::{free_port, wait_until};

fn request() -> GenerateRequest {
    GenerateRequest {
        prompt: PromptText::template("Question: how do bees tell where flowers are?\nAnswer:"),
        max_tokens: 32,
        stop: vec![],
        ignore_eos: false,
        sampling: Sampling::greedy(),
    }
}

/// Asks `n` questions at once; returns each whole answer.
async fn ask(pool: &RemoteGenerator, n: usize) -> Vec<String> {
    let answers = join_all((0..n).map(|_| async { pool.generate(request()).unwrap().collect().await })).await;
    answers.into_iter().map(|a| a.expect("every question is answered").text).collect()
}

/// Each answer is the whole answer once, after a retry note when a stream dropped midway.
fn assert_answered_once(answers: &[String]) {
    for text in answers {
        assert!(text.ends_with(ANSWER) && text.matches(ANSWER).count() == 1, "{text:?}");
        if text != ANSWER {
            assert_eq!(text.matches(RETRY_NOTE).count(), 1, "a note before the second try: {text:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_answers_every_question_once_while_engines_fail_drop_streams_and_come_back() {
    lore_tests::init();
    let broken = FakeOpenAi::start(Behaviour::Fail).await;
    let dropping = FakeOpenAi::start(Behaviour::DropMidway).await;
    let slow = FakeOpenAi::start(Behaviour::Slow).await;
    let pool = RemoteGenerator::new(RemoteSettings {
        endpoints: vec![broken.base_url(), dropping.base_url(), slow.base_url()],
        model: "fake".into(),
        chat: false,
        api_key: Some("secret".into()),
        max_in_flight: 3,
        context_tokens: 2048,
        health_interval: Duration::from_millis(200),
        timeout: Duration::from_secs(5),
    })
    .unwrap();

    assert_answered_once(&ask(&pool, 8).await);
    assert!(broken.completions() >= 1 && dropping.completions() >= 1, "both bad engines were tried");
    assert!(slow.most_at_once() <= 3, "at most max_in_flight at once: {}", slow.most_at_once());
    assert!(!pool.endpoints()[0].healthy, "the failing engine is out");

    // Out means out: new questions go elsewhere while its health check fails.
    let tried = broken.completions();
    assert_answered_once(&ask(&pool, 3).await);
    assert_eq!(broken.completions(), tried);

    // Once its health check passes, it takes questions again.
    broken.set(Behaviour::Answer);
    wait_until(Duration::from_secs(5), "the engine is back", || pool.endpoints()[0].healthy).await;
    assert_answered_once(&ask(&pool, 6).await);
    assert!(broken.completions() > tried, "the recovered engine answers again");
    assert!(pool.endpoints().iter().all(|e| e.in_flight == 0), "{:?}", pool.endpoints());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_with_no_engine_left_fails_the_question_in_words() {
    lore_tests::init();
    let broken = FakeOpenAi::start(Behaviour::Fail).await;
    let pool = RemoteGenerator::new(RemoteSettings {
        endpoints: vec![broken.base_url()],
        model: "fake".into(),
        chat: false,
        api_key: None,
        max_in_flight: 2,
        context_tokens: 2048,
        health_interval: Duration::from_secs(60),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let error = pool.generate(request()).unwrap().collect().await.unwrap_err();
    assert!(error.to_string().contains("no engine endpoint is reachable"), "{error}");
    assert_eq!(pool.context_tokens(), 2048);
}

#[tokio::test(flavor = "multi_thread")]
async fn lore_answers_from_its_knowledge_base_through_another_lore_as_its_engine() {
    // The engine: a Lore serving its generator over the HTTP API.
    let engine_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let engine_config = format!("server:\n  listen: 127.0.0.1:{port}\n{}", sample_kb());
    let engine = TelegramDaemon::start(engine_dir.path(), &engine_config, "bees", "").await;
    // The asker: no model of its own, `type: openai` pointing at the engine.
    let dir = tempfile::tempdir().unwrap();
    let generator = format!(
        "    type: openai\n    endpoints: [http://127.0.0.1:{port}/v1]\n    model: {}\n    context_tokens: 2048\n    max_answer_tokens: 96\n",
        model_name(&generator_path())
    );
    // The `llm` reranker needs a local model's log-probabilities.
    let config = format!("retrieval:\n  rerankers: []\n{}", sample_kb());
    let asker = TelegramDaemon::start_with_generator(dir.path(), Some(&generator), &config, "bees", "").await;
    assert!(asker.app.generator.is_none() && asker.app.remote.is_some(), "no local model");

    asker.fake.push_message(Chat::Private(5), 5, "How do honeybees tell each other where the flowers are?");
    let shown = || asker.fake.shown_in(5).iter().map(|m| strip_tags(m)).collect::<Vec<_>>();
    wait_until(Duration::from_secs(120), "the answer arrives", || shown().iter().any(|m| m.contains("Sources"))).await;
    let answer = shown().concat();
    assert!(answer.to_lowercase().contains("dance"), "the gold answer: {answer}");
    assert!(answer.contains("honeybees.md"), "its source: {answer}");
    let engine_pool = asker.app.remote.as_ref().unwrap().endpoints();
    assert!(engine_pool[0].healthy && engine_pool[0].in_flight == 0, "{engine_pool:?}");
    asker.stop().await;
    engine.stop().await;
}
