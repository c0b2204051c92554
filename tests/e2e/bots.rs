//! The whole daemon (router, pipeline, real models) behind the real Telegram client and the
//! fake Bot API server: per-chat knowledge bases, allow-lists, commands (`/kb` for admins), memory.

use std::time::Duration;

use lore_tests::daemon::{sample_kb, TelegramDaemon};
use lore_tests::fake_telegram::{strip_tags, Chat, FakeTelegram};
use lore_tests::models::squad_article_text;
use lore_tests::wait_until;

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
    let dir = tempfile::tempdir().unwrap();
    let (normans, _) = squad_article_text("squad-v2/normans.json", dir.path());
    let kbs = format!("{}  normans:\n    sources: [{}]\n", sample_kb(), normans.display());
    let bot = format!("    admins: [\"{BOB}\"]\n    allow:\n      users: [\"{ANN}\", \"{BOB}\"]\n    channels:\n      \"{BOB}\":\n        knowledge_base: normans\n");
    let daemon = TelegramDaemon::start(dir.path(), &kbs, "bees", &bot).await;
    let fake = &daemon.fake;

    // Ann's chat uses the bot's knowledge base (bees), Bob's is mapped to normans.
    fake.push_message(Chat::Private(ANN), ANN, "How do honeybees tell each other where flowers are?");
    fake.push_message(
        Chat::Private(BOB),
        BOB,
        "Who was the leader of the Normans who swore fealty to King Charles III?",
    );
    let ann = reply_in(fake, ANN, 1, "Ann gets an answer", answered).await;
    let bob = reply_in(fake, BOB, 1, "Bob gets an answer", answered).await;
    assert!(ann.contains("honeybees.md") && !ann.contains("normans.txt"), "Ann's answer: {ann}");
    assert!(bob.contains("normans.txt") && !bob.contains("honeybees.md"), "Bob's answer: {bob}");

    // Someone not on the allow-list is refused politely, and nothing is retrieved for them.
    fake.push_message(Chat::Private(MALLORY), MALLORY, "What is the waggle dance?");
    let refusal = reply_in(fake, MALLORY, 1, "Mallory is refused", any).await;
    assert!(refusal.contains("Sorry") && !refusal.contains("Sources"), "{refusal}");

    // /kb names the chat's knowledge base; /sources shows the passages behind the last
    // answer; /reset forgets them.
    fake.push_message(Chat::Private(BOB), BOB, "/kb");
    assert!(reply_in(fake, BOB, 2, "/kb", any).await.contains("\"normans\""));
    fake.push_message(Chat::Private(BOB), BOB, "/sources");
    let sources = reply_in(fake, BOB, 3, "/sources", any).await;
    assert!(sources.contains("[1] ") && sources.contains("normans.txt"), "{sources}");
    fake.push_message(Chat::Private(BOB), BOB, "/reset");
    assert!(reply_in(fake, BOB, 4, "/reset", any).await.contains("forgot"));
    fake.push_message(Chat::Private(BOB), BOB, "/sources");
    assert!(reply_in(fake, BOB, 5, "/sources after /reset", any).await.contains("no sources"));

    daemon.stop().await;
}
