//! Lore with llama.cpp's own server as its engine (`models.generator.type: openai`): the
//! remote pool against a real third-party engine, built by `scripts/build-llama-server`.

use std::time::Duration;

use lore::app::{App, Load};
use lore_remote::{CountedBy, NO_PROMPT_LOGPROBS};
use lore_tests::daemon::{sample_kb, TelegramDaemon};
use lore_tests::fake_telegram::{strip_tags, Chat};
use lore_tests::llama_server::LlamaServer;
use lore_tests::models::{config_with_models_section, embedder_path, generator_path, model_name};
use lore_tests::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_answers_on_telegram_with_llama_server_as_its_engine_which_cannot_run_the_llm_reranker() {
    let Some(server) = LlamaServer::start(&generator_path(), 2, 2048).await else { return };
    let models = format!(
        "  generator:\n    type: openai\n    endpoints: [{}]\n    model: {}\n    api: chat\n    context_tokens: 2048\n    max_answer_tokens: 64\n  embedder:\n    path: {}\n",
        server.base_url,
        model_name(&generator_path()),
        embedder_path().display(),
    );

    // The default `llm` reranker needs the prompt's log-probabilities, which llama-server
    // does not give: the start is refused, naming the key and what to set instead.
    let refused = tempfile::tempdir().unwrap();
    let config = config_with_models_section(refused.path(), &models, &sample_kb());
    let error = App::load(config, Load::All).await.err().expect("refused").to_string();
    assert!(error.contains("retrieval.rerankers") && error.contains(NO_PROMPT_LOGPROBS), "{error}");
    assert!(error.contains("rerankers: []") && error.contains("cross-encoder"), "says what to do: {error}");

    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{}retrieval:\n  rerankers: []\n", sample_kb());
    let asker = TelegramDaemon::start_with_models(dir.path(), Some(&models), &extra, "bees", "").await;
    asker.fake.push_message(Chat::Private(5), 5, "What is the waggle dance?");
    let shown = || asker.fake.shown_in(5).iter().map(|m| strip_tags(m)).collect::<Vec<_>>();
    wait_until(Duration::from_secs(120), "the answer arrives", || shown().iter().any(|m| m.contains("Sources"))).await;
    let answer = shown().concat();
    assert!(answer.to_lowercase().contains("forager"), "answered from the passage: {answer}");
    assert!(answer.contains("honeybees.md") && answer.contains("The waggle dance"), "its source: {answer}");
    let remote = asker.app.remote_generator.as_ref().unwrap();
    assert_eq!(remote.counted_by(), CountedBy::Server, "prompts fitted with llama-server's /tokenize");
    let pool = remote.endpoints();
    assert!(pool[0].healthy && pool[0].in_flight == 0, "{pool:?}");
    asker.stop().await;
}
