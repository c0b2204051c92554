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

/// The last message in `chat` once it holds `what`.
async fn reply_in(fake: &FakeTelegram, chat: i64, count: usize, what: &str) -> String {
    wait_until(ANSWER, what, || fake.shown_in(chat).len() >= count && !fake.shown_in(chat)[count - 1].ends_with('…')).await;
    // Let the last edit land (answers are edited in place while they stream).
    let mut last = String::new();
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = fake.shown_in(chat)[count - 1].clone();
        if now == last {
            return strip_tags(&now);
        }
        last = now;
    }
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
    let ann = reply_in(&fake, ANN, 1, "Ann gets an answer").await;
    let bob = reply_in(&fake, BOB, 1, "Bob gets an answer").await;
    assert!(ann.contains("honeybees.md") && !ann.contains("normans.txt"), "Ann's answer: {ann}");
    assert!(bob.contains("normans.txt") && !bob.contains("honeybees.md"), "Bob's answer: {bob}");
    assert!(ann.contains("Sources"), "{ann}");

    // Someone not on the allow-list is refused politely, and nothing is retrieved for them.
    fake.push_message(Chat::Private(MALLORY), MALLORY, "What is the waggle dance?");
    let refusal = reply_in(&fake, MALLORY, 1, "Mallory is refused").await;
    assert!(refusal.contains("Sorry") && !refusal.contains("Sources"), "{refusal}");

    // /kb names the chat's knowledge base; /sources shows the passages behind the last
    // answer; /reset forgets them.
    fake.push_message(Chat::Private(BOB), BOB, "/kb");
    assert!(reply_in(&fake, BOB, 2, "/kb").await.contains("\"normans\""));
    fake.push_message(Chat::Private(BOB), BOB, "/sources");
    let sources = reply_in(&fake, BOB, 3, "/sources").await;
    assert!(sources.contains("[1] ") && sources.contains("normans.txt"), "{sources}");
    fake.push_message(Chat::Private(BOB), BOB, "/reset");
    assert!(reply_in(&fake, BOB, 4, "/reset").await.contains("forgot"));
    fake.push_message(Chat::Private(BOB), BOB, "/sources");
    assert!(reply_in(&fake, BOB, 5, "/sources after /reset").await.contains("no sources"));

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(40), daemon).await.expect("daemon stops").unwrap().unwrap();
}
