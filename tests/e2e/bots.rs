//! The whole daemon (router, pipeline, real models) behind the real Telegram client and the
//! fake Bot API server: per-chat knowledge bases, allow-lists, commands, memory.

use std::sync::Arc;
use std::time::Duration;

use lore::app::App;
use lore_tests::fake_telegram::{strip_tags, Chat, FakeTelegram};
use lore_tests::models::{config, squad_article_text};
use lore_tests::{init, wait_until};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "123456:fake-telegram-token";
const ANN: i64 = 42;
const BOB: i64 = 43;
const MALLORY: i64 = 666;
const ANSWER: Duration = Duration::from_secs(120);

/// Message number `count` in `chat` (as the user sees it) once `done` holds for it.
async fn reply_in(fake: &FakeTelegram, chat: i64, count: usize, what: &str, done: fn(&str) -> bool) -> String {
    let shown = || fake.shown_in(chat).get(count - 1).map(|m| strip_tags(m));
    wait_until(ANSWER, what, || shown().is_some_and(|m| done(&m))).await;
    shown().expect("waited for it")
}

/// A streamed answer is final once its sources are appended.
fn answered(m: &str) -> bool {
    m.contains("Sources")
}

fn any(m: &str) -> bool {
    !m.is_empty()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_chat_answers_from_its_own_knowledge_base_with_allow_lists_and_commands() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let (normans, _) = squad_article_text("squad-v2/normans.json", dir.path());
    let bees = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/sample/honeybees.md");
    let fake = FakeTelegram::start(TOKEN).await;
    std::env::set_var("LORE_TEST_TELEGRAM_TOKEN", TOKEN);
    let extra = format!(
        "knowledge_bases:\n  bees:\n    sources: [{bees}]\n  normans:\n    sources: [{normans}]\n\
         bots:\n  docs:\n    knowledge_base: bees\n    adapter:\n      type: telegram\n      token_env: LORE_TEST_TELEGRAM_TOKEN\n      api_url: {api}\n      poll_timeout_secs: 2\n      edit_interval_ms: 300\n\
         \x20   allow:\n      users: [\"{ANN}\", \"{BOB}\"]\n    channels:\n      \"{BOB}\":\n        knowledge_base: normans\n",
        bees = bees.display(),
        normans = normans.display(),
        api = fake.api_url(),
    );
    let cfg = config(dir.path(), &extra);
    let app = Arc::new(App::load(cfg, true).await.unwrap());
    for kb in ["bees", "normans"] {
        let sources = app.config.knowledge_bases[kb].sources.clone();
        let chunking = app.config.chunking.clone();
        lore::ingest::ingest(&app.kb(kb, true).await.unwrap(), &app.embedder, &sources, &chunking, false).await.unwrap();
    }
    let bot = &app.config.bots["docs"];
    let lore::config::AdapterConfig::Telegram(tg) = &bot.adapter else { panic!("telegram adapter") };
    let adapter = lore_adapters::telegram::TelegramAdapter::new("docs", tg, TOKEN.into()).unwrap();
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(lore::cli::serve_until(app.clone(), vec![Box::new(adapter)], shutdown.clone()));
    wait_until(Duration::from_secs(10), "the bot registers its commands", || !fake.calls("setMyCommands").is_empty()).await;

    // Ann's chat uses the bot's knowledge base (bees), Bob's is mapped to normans.
    fake.push_message(Chat::Private(ANN), ANN, "How do honeybees tell each other where flowers are?");
    fake.push_message(Chat::Private(BOB), BOB, "Who was the leader of the Normans who swore fealty to King Charles III?");
    let ann = reply_in(&fake, ANN, 1, "Ann gets an answer", answered).await;
    let bob = reply_in(&fake, BOB, 1, "Bob gets an answer", answered).await;
    assert!(ann.contains("honeybees.md") && !ann.contains("normans.txt"), "Ann's answer: {ann}");
    assert!(bob.contains("normans.txt") && !bob.contains("honeybees.md"), "Bob's answer: {bob}");

    // Someone not on the allow-list is refused politely, and nothing is retrieved for them.
    fake.push_message(Chat::Private(MALLORY), MALLORY, "What is the waggle dance?");
    let refusal = reply_in(&fake, MALLORY, 1, "Mallory is refused", any).await;
    assert!(refusal.contains("Sorry") && !refusal.contains("Sources"), "{refusal}");

    // /kb names the chat's knowledge base; /sources shows the passages behind the last
    // answer; /reset forgets them.
    fake.push_message(Chat::Private(BOB), BOB, "/kb");
    assert!(reply_in(&fake, BOB, 2, "/kb", any).await.contains("\"normans\""));
    fake.push_message(Chat::Private(BOB), BOB, "/sources");
    let sources = reply_in(&fake, BOB, 3, "/sources", any).await;
    assert!(sources.contains("[1] ") && sources.contains("normans.txt"), "{sources}");
    fake.push_message(Chat::Private(BOB), BOB, "/reset");
    assert!(reply_in(&fake, BOB, 4, "/reset", any).await.contains("forgot"));
    fake.push_message(Chat::Private(BOB), BOB, "/sources");
    assert!(reply_in(&fake, BOB, 5, "/sources after /reset", any).await.contains("no sources"));

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(40), daemon).await.expect("daemon stops").unwrap().unwrap();
}
