//! A busy community at once, on the real default models behind the fake Telegram server:
//! everyone is answered, in order of arrival, one person flooding the bot does not keep
//! others waiting (and has at most a few questions waiting), and two dozen people voting
//! while others ask lose no vote and count none twice.

use std::time::Duration;

use lore_tests::daemon::{sample_kb, TelegramDaemon};
use lore_tests::fake_telegram::{strip_tags, Chat};
use lore_tests::wait_until;

const ANSWERS: Duration = Duration::from_secs(600);
const QUESTION: &str = "How do honeybees tell each other where the flowers are?";

/// What the bot shows in each chat, tags stripped.
fn shown(daemon: &TelegramDaemon, chat: i64) -> Vec<String> {
    daemon.fake.shown_in(chat).iter().map(|m| strip_tags(m)).collect()
}

/// The first text the bot sent to `chat` (before any edit).
fn first_sent(daemon: &TelegramDaemon, chat: i64) -> String {
    let sent = daemon.fake.calls("sendMessage");
    let first = sent.iter().find(|b| b["chat_id"].as_i64() == Some(chat)).expect("the bot wrote to the chat");
    first["text"].as_str().unwrap_or_default().to_string()
}

fn answered(m: &str) -> bool {
    m.contains("Sources")
}

#[tokio::test(flavor = "multi_thread")]
async fn sixteen_people_asking_at_once_are_all_answered_in_order_of_arrival() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TelegramDaemon::start(dir.path(), &sample_kb(), "bees", "").await;
    let parallel = daemon.app.config.models.generator.parallel();
    let people: Vec<i64> = (1000..1016).collect();
    for &p in &people {
        daemon.fake.push_message(Chat::Private(p), p, QUESTION);
    }
    wait_until(ANSWERS, "every person has an answer with sources", || {
        people.iter().all(|&p| shown(&daemon, p).first().is_some_and(|m| answered(m)))
    })
    .await;
    for (i, &p) in people.iter().enumerate() {
        let messages = shown(&daemon, p);
        assert_eq!(messages.len(), 1, "person {i}: one message, edited into the answer: {messages:?}");
        assert!(messages[0].contains("honeybees.md"), "person {i}: {}", messages[0]);
        // The first `parallel` start at once; everyone after them learned their place,
        // which is their place in order of arrival.
        let first = first_sent(&daemon, p);
        if i < parallel {
            assert!(!first.contains("waiting"), "person {i} should not have waited: {first}");
        } else {
            assert_eq!(first, lore::question::router::waiting_text(i + 1 - parallel), "person {i}");
        }
    }
    // Still running: one more question is answered.
    daemon.fake.push_message(Chat::Private(2000), 2000, QUESTION);
    wait_until(ANSWERS, "a question after the crowd is answered", || {
        shown(&daemon, 2000).first().is_some_and(|m| answered(m))
    })
    .await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_person_flooding_the_bot_does_not_keep_others_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TelegramDaemon::start(dir.path(), &sample_kb(), "bees", "").await;
    let (flood, others) = (3000, [3001, 3002, 3003]);
    // The same question each time, so the flooder's answers are as long as the others'
    // (a numbered variant gets a one-line reply from the small model).
    for _ in 0..10 {
        daemon.fake.push_message(Chat::Private(flood), flood, QUESTION);
    }
    for p in others {
        daemon.fake.push_message(Chat::Private(p), p, QUESTION);
    }
    let finals = |chat: i64| shown(&daemon, chat).iter().filter(|m| answered(m)).count();
    wait_until(ANSWERS, "the three others are answered", || others.iter().all(|&p| finals(p) == 1)).await;
    // Nobody else waited for the flooder, whose questions go one at a time (one in progress
    // per person): when the others were answered, the flooder was not (their answers ran
    // beside the flooder's first ones, not behind all ten).
    for p in others {
        assert!(!first_sent(&daemon, p).contains("waiting"), "{p} should have started at once");
    }
    let flood_done = finals(flood);
    assert!(flood_done < 10, "the others waited behind all {flood_done} of the flooder's answers");
    // One answered at a time and three waiting (line.max_waiting_per_person): the
    // rest are refused in words at once, and what was let in is answered.
    let refusal = "Sorry, you already have 3 questions waiting; I will answer those first.";
    let refused = || shown(&daemon, flood).iter().filter(|m| m.as_str() == refusal).count();
    wait_until(ANSWERS, "the flooder's questions are answered or refused", || finals(flood) + refused() == 10).await;
    assert!(refused() >= 1, "ten questions at once, and none refused: {:?}", shown(&daemon, flood));
    daemon.stop().await;
}

/// The bot's answers in `chat` that carry vote buttons: (message id, answer id), oldest
/// first.
fn answers_with_buttons(daemon: &TelegramDaemon, chat: Chat) -> Vec<(i64, String)> {
    let ids = daemon.fake.message_ids(chat.id());
    let answer_of = |id: i64| {
        let buttons = daemon.fake.buttons(chat.id(), id);
        buttons.iter().find_map(|(_, data)| data.strip_prefix("vote:up:").map(String::from))
    };
    ids.into_iter().filter_map(|id| answer_of(id).map(|answer| (id, answer))).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_four_people_voting_while_others_ask_lose_no_vote_and_count_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TelegramDaemon::start(dir.path(), &sample_kb(), "bees", "").await;
    let group = Chat::Group(-100_900);
    daemon.fake.push_message(group, 5000, &format!("/ask {QUESTION}"));
    wait_until(ANSWERS, "the first answer and its buttons", || answers_with_buttons(&daemon, group).len() == 1).await;
    daemon.fake.push_message(group, 5000, "/ask What do bees eat?");
    wait_until(ANSWERS, "the second answer and its buttons", || answers_with_buttons(&daemon, group).len() == 2).await;
    let answers = answers_with_buttons(&daemon, group);
    let ((first_message, first), (second_message, second)) = (answers[0].clone(), answers[1].clone());

    // Others ask while the votes come in.
    let askers: Vec<i64> = (7000..7006).collect();
    for &p in &askers {
        daemon.fake.push_message(Chat::Private(p), p, QUESTION);
    }
    let voters: Vec<i64> = (6000..6024).collect();
    let mut clicks = Vec::new();
    for &p in &voters {
        clicks.push(daemon.fake.click(group, first_message, p, &format!("vote:up:{first}")));
        clicks.push(daemon.fake.click(group, second_message, p, &format!("vote:down:{second}")));
    }
    let answered_once = |clicks: &[String]| clicks.iter().all(|q| daemon.fake.click_answers(q).len() == 1);
    wait_until(ANSWERS, "every click is acknowledged", || answered_once(&clicks)).await;
    // Half of them change their mind about the first answer.
    let mut changed = Vec::new();
    for &p in &voters[..12] {
        changed.push(daemon.fake.click(group, first_message, p, &format!("vote:down:{first}")));
    }
    wait_until(ANSWERS, "every changed vote is acknowledged", || answered_once(&changed)).await;
    wait_until(ANSWERS, "the askers are answered", || {
        askers.iter().all(|&p| shown(&daemon, p).first().is_some_and(|m| answered(m)))
    })
    .await;

    for query in clicks.iter().chain(&changed) {
        let said = daemon.fake.click_answers(query);
        assert_eq!(said.len(), 1, "each click acknowledged once: {said:?}");
        let text = said[0]["text"].as_str().unwrap_or_default();
        assert!(text == "Thanks for the 👍!" || text == "Thanks: noted 👎.", "{text}");
    }
    let votes = daemon.app.feedback().unwrap().votes(Some("docs"), None).await.unwrap();
    let count = |answer: &str, rating| votes.iter().filter(|v| v.answer_id == answer && v.rating == rating).count();
    use lore_core::Rating::{Down, Up};
    assert_eq!(votes.len(), 48, "one vote per person and answer");
    assert_eq!((count(&first, Up), count(&first, Down)), (12, 12), "a changed vote replaced the first");
    assert_eq!((count(&second, Up), count(&second, Down)), (0, 24));
    let people: std::collections::HashSet<&str> = votes.iter().map(|v| v.person.as_str()).collect();
    assert_eq!(people.len(), 24, "each voter is one person, none stored by their id");
    // A salted hash (24 hex digits), never the id itself. (Whether a hash happens to
    // contain an id's four digits is chance, not a leak.)
    let hashed = |p: &str| p.len() == 24 && p.bytes().all(|b| b.is_ascii_hexdigit());
    assert!(people.iter().all(|p| hashed(p) && !voters.iter().any(|v| *p == v.to_string())), "{people:?}");
    daemon.stop().await;
}
