//! The Telegram adapter (real teloxide client) against the fake Bot API server.

use std::time::Duration;

use lore_adapters::telegram::{TelegramAdapter, TelegramConfig};
use lore_adapters::{Command, Incoming};
use lore_core::Rating;
use lore_tests::fake_telegram::{strip_tags, Chat, FakeTelegram, Fault, BOT_ID, BOT_USERNAME, DROPPED};
use lore_tests::{
    assert_retried_after, assert_words_whole, init, long_answer, sample_sources, stream_sample_answer, wait_until,
    RunningAdapter,
};
use serde_json::json;

const TOKEN: &str = "123456:fake-telegram-token";
const ANN: i64 = 42;
const PRIVATE: Chat = Chat::Private(ANN);
const GROUP: Chat = Chat::Group(-100_200);
const FORUM: Chat = Chat::Forum(-100_300);
const BOB: i64 = 44;
const OTHER_BOT: i64 = 43;
/// An answer's id, as the router names it (its question's id).
const ANSWER_ID: &str = "3fa2c1d4e5b6";
const EDIT_MS: u64 = 200;
const WAIT: Duration = Duration::from_secs(5);

/// [`sample_sources`] as they end an answer on Telegram.
const SOURCES: &str = "\n\n<b>Sources</b>\n[1] guide.md (lines 1-9)\n[2] my_notes&lt;b&gt;*.md (lines 12-20)";

struct Running {
    fake: FakeTelegram,
    run: RunningAdapter,
}

impl Running {
    async fn start() -> Self {
        init();
        let fake = FakeTelegram::start(TOKEN).await;
        let run = RunningAdapter::spawn(Box::new(adapter_for(&fake)));
        // Fails when teloxide talks to the real Telegram instead. (Polls are recorded when
        // they return, so wait for the last call before polling starts.)
        wait_until(WAIT, "the bot registers its commands on the fake", || !fake.calls("setMyCommands").is_empty())
            .await;
        Self { fake, run }
    }

    /// Ann asks `question` in `chat` and gets a short answer `id`; returns its message's id.
    async fn answered(&mut self, chat: Chat, question: &str, id: &str) -> i64 {
        self.fake.push_message(chat, ANN, question);
        let mut asked = self.run.next().await;
        answer(&self.fake, &mut asked, chat.id(), id, "Lore is a bot.").await
    }
}

/// The bot `docs` on the fake server.
fn adapter_for(fake: &FakeTelegram) -> TelegramAdapter {
    let cfg: TelegramConfig = serde_json::from_value(json!({
        "api_url": fake.api_url(),
        "poll_timeout_secs": 5,
        // A request that gets no answer fails after 2 s.
        "request_timeout_secs": 2,
        "edit_interval_ms": EDIT_MS,
    }))
    .unwrap();
    TelegramAdapter::new("docs", &cfg, TOKEN.into()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telegram_bot_counts_as_connected_only_once_get_me_answers() {
    init();
    let fake = FakeTelegram::start(TOKEN).await;
    fake.inject("getMe", 1, Fault::Hang);
    let run = RunningAdapter::spawn(Box::new(adapter_for(&fake)));
    wait_until(WAIT, "getMe is asked", || fake.requests().iter().any(|r| r.path == "getMe")).await;
    assert!(!run.is_connected(), "connected before Telegram answered getMe");
    // The hung call times out (2 s) and is asked again.
    wait_until(Duration::from_secs(10), "the bot is connected once getMe answers", || run.is_connected()).await;
    assert_eq!(fake.calls("getMe").len(), 1);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_private_chat_streams_typing_edits_and_html_answer_with_sources() {
    let mut bot = Running::start().await;
    assert_eq!(bot.fake.calls("getMe").len(), 1);
    let commands = &bot.fake.calls("setMyCommands")[0]["commands"];
    let names: Vec<_> = commands.as_array().unwrap().iter().map(|c| c["command"].clone()).collect();
    assert_eq!(names, vec!["help", "sources", "reset", "kb", "forget", "correct"]);

    bot.fake.push_message(PRIVATE, ANN, "what is lore?");
    let mut incoming = bot.run.next().await;
    assert_eq!(incoming.text, "what is lore?");
    assert_eq!(incoming.conversation.0, format!("telegram:{ANN}"));
    assert_eq!(incoming.channel, ANN.to_string());
    assert_eq!(incoming.author.id, ANN.to_string());
    assert_eq!(incoming.command, None);

    let answer = stream_sample_answer(&mut *incoming.reply).await;

    let requests = bot.fake.requests();
    let typing = requests.iter().position(|r| r.path == "sendChatAction").expect("typing");
    assert_eq!(requests[typing].body["action"], "typing");
    let first_send = requests.iter().position(|r| r.path == "sendMessage").unwrap();
    assert!(typing < first_send);
    assert_eq!(bot.fake.calls("sendMessage").len(), 1, "one message, edited");
    let edits = bot.fake.calls("editMessageText");
    assert!(edits.len() >= 2, "streamed edits expected: {edits:?}");
    assert!(edits.iter().all(|e| e["parse_mode"] == "HTML"));
    assert_eq!(bot.fake.shown_in(ANN), vec![answer + SOURCES]);
    let edit_times: Vec<_> = requests.iter().filter(|r| r.path == "editMessageText").map(|r| r.at).collect();
    for pair in edit_times.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(EDIT_MS - 30));
    }
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_group_needs_ask_mention_reply_or_command() {
    let mut bot = Running::start().await;
    let fake = &bot.fake;
    fake.push_message(GROUP, ANN, "just chatting");
    // Other accounts whose names start with the bot's.
    fake.push_message(GROUP, ANN, &format!("@{BOT_USERNAME}_admin please ban me"));
    fake.push_message(GROUP, ANN, &format!("@{BOT_USERNAME}x hello"));
    fake.push_bot_message(GROUP, OTHER_BOT, "/ask I am a bot");
    fake.push_message(GROUP, ANN, "/ask what is lore?");
    fake.push_message(GROUP, ANN, "/ask@OtherBot not for us");
    fake.push_message(GROUP, ANN, "@LoreTestBot why  so?");
    fake.push_reply(GROUP, ANN, "and then?", BOT_ID);
    fake.push_reply(GROUP, ANN, "reply to a person", ANN + 1);
    fake.push_message(GROUP, ANN, "/reset@OtherBot");
    fake.push_message(GROUP, ANN, "/reset@LoreTestBot");
    fake.push_message(PRIVATE, ANN, "/help");

    // One polling loop: messages arrive in order.
    let ask = bot.run.next().await;
    assert_eq!((ask.text.as_str(), ask.command.clone()), ("what is lore?", None));
    assert_eq!(ask.conversation.0, format!("telegram:{}", GROUP.id()));
    assert_eq!(bot.run.next().await.text, "why so?");
    assert_eq!(bot.run.next().await.text, "and then?");
    assert_eq!(bot.run.next().await.command, Some(Command::Reset));
    let help = bot.run.next().await;
    assert_eq!(help.command, Some(Command::Help));
    assert_eq!(help.conversation.0, format!("telegram:{ANN}"));
    bot.run.assert_nothing_more();

    // In a group the answer replies to the question.
    let mut ask = ask;
    ask.reply.say("Lore is a bot.").await.unwrap();
    let sent = bot.fake.calls("sendMessage");
    assert!(sent[0]["reply_parameters"]["message_id"].is_i64(), "{}", sent[0]);
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_long_answer_is_split_at_4096_keeping_words_utf8_and_code() {
    let mut bot = Running::start().await;
    bot.fake.push_message(PRIVATE, ANN, "tell me all");
    let mut incoming = bot.run.next().await;
    let answer = long_answer(10_000);
    incoming.reply.finish(&answer, &sample_sources()).await.unwrap();

    let shown = bot.fake.shown_in(ANN);
    assert!(shown.len() >= 3, "{} pieces", shown.len());
    for piece in &shown {
        let visible = strip_tags(piece);
        assert!(visible.encode_utf16().count() <= 4096, "piece of {} units", visible.len());
        assert_eq!(piece.matches("<pre>").count(), piece.matches("</pre>").count());
        assert!(!piece.contains("```"), "fences become <pre>: {piece:?}");
        assert_words_whole(&visible, &answer);
    }
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_429_is_retried_after_retry_after_and_answer_arrives_once() {
    let mut bot = Running::start().await;
    bot.fake.push_message(PRIVATE, ANN, "hello");
    let mut incoming = bot.run.next().await;
    bot.fake.rate_limit("sendMessage", 1, 1);
    incoming.reply.finish("Hi there.", &[]).await.unwrap();

    let sends: Vec<_> = bot.fake.requests().into_iter().filter(|r| r.path == "sendMessage").collect();
    assert_retried_after(&sends, Duration::from_secs(1));
    assert_eq!(bot.fake.shown_in(ANN), vec!["Hi there."]);
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_polling_survives_errors_and_delivers_each_update_once() {
    let mut bot = Running::start().await;
    // The waiting poll and the next one fail; the bot backs off and polls again.
    bot.fake.fail("getUpdates", 2);
    bot.fake.push_message(PRIVATE, ANN, "first");
    bot.fake.push_message(PRIVATE, ANN, "second");
    assert_eq!(bot.run.next().await.text, "first");
    assert_eq!(bot.run.next().await.text, "second");
    let failed = bot.fake.requests().iter().filter(|r| r.path == "getUpdates" && r.status == DROPPED).count();
    assert_eq!(failed, 2, "the fake broke two polls");
    // Later polls confirm the updates: nothing comes again.
    bot.fake.push_message(PRIVATE, ANN, "third");
    assert_eq!(bot.run.next().await.text, "third");
    bot.run.assert_nothing_more();
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_hostile_text_is_html_escaped() {
    let mut bot = Running::start().await;
    bot.fake.push_message(PRIVATE, ANN, "<b>hi</b>");
    let mut incoming = bot.run.next().await;
    assert_eq!(incoming.text, "<b>hi</b>", "the question itself is passed on unchanged");
    incoming.reply.update("<b>bold</b> & <script>").await.unwrap();
    incoming.reply.finish("<b>bold</b> & <script>alert(1)</script> **x** `y", &[]).await.unwrap();
    assert_eq!(
        bot.fake.shown_in(ANN),
        vec!["&lt;b&gt;bold&lt;/b&gt; &amp; &lt;script&gt;alert(1)&lt;/script&gt; **x** `y"]
    );
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_forum_topic_is_its_own_conversation_and_every_reply_lands_in_it() {
    let mut bot = Running::start().await;
    let fake = &bot.fake;
    // Every message in a topic replies to its first one: the bot's here, which is no reason
    // to answer chatter.
    let topic = fake.open_topic(FORUM, BOT_ID, "Lore help");
    let other_topic = fake.open_topic(FORUM, ANN, "Off topic");
    fake.push_topic_message(FORUM, topic, ANN, "just chatting in the topic");
    fake.push_topic_message(FORUM, topic, ANN, "@LoreTestBot what is lore?");
    fake.push_topic_message(FORUM, topic, ANN, "/ask tell me all");
    fake.push_topic_message(FORUM, topic, ANN, "/reset@LoreTestBot");

    let mut streamed = bot.run.next().await;
    assert_eq!(streamed.text, "what is lore?");
    assert_eq!(streamed.conversation.0, format!("telegram:{}:{topic}", FORUM.id()));
    assert_eq!(streamed.channel, FORUM.id().to_string());
    stream_sample_answer(&mut *streamed.reply).await;
    let mut long = bot.run.next().await;
    long.reply.finish(&long_answer(10_000), &sample_sources()).await.unwrap();
    let mut command = bot.run.next().await;
    assert_eq!(command.command, Some(Command::Reset));
    command.reply.say("Done: I forgot this conversation.").await.unwrap();

    let sends = bot.fake.calls("sendMessage");
    let typing = bot.fake.calls("sendChatAction");
    assert!(sends.len() >= 4 && !typing.is_empty(), "{} messages, {} chat actions", sends.len(), typing.len());
    for body in sends.iter().chain(&typing) {
        assert_eq!(body["chat_id"], FORUM.id());
        assert_eq!(body["message_thread_id"], topic, "lands in the topic: {body}");
    }

    bot.fake.push_topic_message(FORUM, other_topic, ANN, "@LoreTestBot and here?");
    let elsewhere = bot.run.next().await;
    assert_eq!(elsewhere.conversation.0, format!("telegram:{}:{other_topic}", FORUM.id()));
    bot.fake.push_message(FORUM, ANN, "@LoreTestBot and in General?");
    let mut general = bot.run.next().await;
    assert_eq!(general.conversation.0, format!("telegram:{}", FORUM.id()));
    general.reply.say("In General.").await.unwrap();
    let last = bot.fake.calls("sendMessage").pop().unwrap();
    assert!(last.get("message_thread_id").is_none(), "General takes no topic: {last}");
    bot.run.assert_nothing_more();
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_5xx_and_timeouts_on_send_and_edit_end_in_one_complete_answer() {
    let mut bot = Running::start().await;
    bot.fake.push_message(PRIVATE, ANN, "what is lore?");
    let mut incoming = bot.run.next().await;
    bot.fake.inject("sendMessage", 1, Fault::Hang);
    bot.fake.inject("sendMessage", 1, Fault::ServerError(502));
    bot.fake.inject("editMessageText", 1, Fault::ServerError(500));
    bot.fake.inject("editMessageText", 1, Fault::Hang);

    let answer = stream_sample_answer(&mut *incoming.reply).await;

    assert_eq!(bot.fake.shown_in(ANN), vec![answer + SOURCES], "one complete answer, no stale partial");
    let statuses: Vec<u16> = bot.fake.requests().iter().filter(|r| r.path != "getUpdates").map(|r| r.status).collect();
    for fault in [DROPPED, 500, 502] {
        assert!(statuses.contains(&fault), "fault {fault} was met: {statuses:?}");
    }
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_group_edits_slow_down_after_429s_and_the_answer_arrives_once() {
    let mut bot = Running::start().await;
    bot.fake.push_message(GROUP, ANN, "/ask what is lore?");
    let mut incoming = bot.run.next().await;
    bot.fake.rate_limit("editMessageText", 2, 1);

    let answer = stream_sample_answer(&mut *incoming.reply).await;

    assert_eq!(bot.fake.shown_in(GROUP.id()), vec![answer + SOURCES]);
    assert_eq!(bot.fake.calls("sendMessage").len(), 1, "edited, never posted anew");
    let edits: Vec<_> = bot.fake.requests().into_iter().filter(|r| r.path == "editMessageText").collect();
    let refused = edits.iter().position(|r| r.status == 429).expect("a 429");
    let next = &edits[refused + 1];
    assert!(next.at - edits[refused].at >= Duration::from_millis(950), "retry_after honoured");
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_partial_that_cannot_be_edited_is_replaced_and_deleted() {
    let mut bot = Running::start().await;
    bot.fake.push_message(PRIVATE, ANN, "first");
    let mut first = bot.run.next().await;
    first.reply.update("Half an ans").await.unwrap();
    bot.fake.inject("editMessageText", 10, Fault::ServerError(400));
    first.reply.finish("Half an answer, then the rest.", &[]).await.unwrap();
    assert_eq!(bot.fake.shown_in(ANN), vec!["Half an answer, then the rest."]);
    assert_eq!(bot.fake.calls("deleteMessage").len(), 1, "the stale partial was deleted");

    // A moderator deletes the streamed message: the answer arrives anew.
    bot.fake.push_message(PRIVATE, ANN, "second");
    let mut second = bot.run.next().await;
    tokio::time::sleep(Duration::from_millis(EDIT_MS)).await;
    second.reply.update("Second ans").await.unwrap();
    assert_eq!(bot.fake.message_ids(ANN).len(), 2, "the second answer streams");
    let streamed = *bot.fake.message_ids(ANN).last().unwrap();
    bot.fake.delete_message(ANN, streamed);
    second.reply.finish("Second answer.", &[]).await.unwrap();
    assert_eq!(bot.fake.shown_in(ANN), vec!["Half an answer, then the rest.", "Second answer."]);
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_long_poll_error_mid_answer_loses_and_repeats_nothing() {
    let mut bot = Running::start().await;
    bot.fake.push_message(PRIVATE, ANN, "first");
    let mut first = bot.run.next().await;
    first.reply.update("Half an ans").await.unwrap();
    bot.fake.fail("getUpdates", 1);
    bot.fake.push_message(PRIVATE, ANN, "second");
    first.reply.finish("Half an answer, then the rest.", &[]).await.unwrap();
    let mut second = bot.run.next().await;
    assert_eq!(second.text, "second");
    second.reply.finish("Second answer.", &[]).await.unwrap();
    assert_eq!(bot.fake.shown_in(ANN), vec!["Half an answer, then the rest.", "Second answer."]);
    bot.fake.push_message(PRIVATE, ANN, "marker");
    assert_eq!(bot.run.next().await.text, "marker");
    bot.run.assert_nothing_more();
    bot.run.stop().await;
}

/// The buttons an answer's id puts under it.
fn vote_buttons(answer: &str) -> Vec<(String, String)> {
    vec![("👍".into(), format!("vote:up:{answer}")), ("👎".into(), format!("vote:down:{answer}"))]
}

/// Answers `incoming` with `text` as answer `answer`; returns the id of its last message in
/// `chat`.
async fn answer(fake: &FakeTelegram, incoming: &mut Incoming, chat: i64, answer: &str, text: &str) -> i64 {
    incoming.reply.answer_id(answer);
    incoming.reply.finish(text, &sample_sources()).await.unwrap();
    *fake.message_ids(chat).last().expect("the answer was sent")
}

/// Waits until query `query` is answered; returns what the answer said.
async fn click_answer(fake: &FakeTelegram, query: &str) -> Option<String> {
    wait_until(WAIT, "the click is answered", || !fake.click_answers(query).is_empty()).await;
    fake.click_answers(query)[0]["text"].as_str().map(String::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_vote_buttons_go_under_the_last_message_of_a_final_answer_only() {
    let mut bot = Running::start().await;
    bot.fake.push_message(PRIVATE, ANN, "tell me all");
    let mut long = bot.run.next().await;
    let last = answer(&bot.fake, &mut long, ANN, ANSWER_ID, &long_answer(10_000)).await;
    let ids = bot.fake.message_ids(ANN);
    assert!(ids.len() >= 3, "split: {ids:?}");
    assert_eq!(bot.fake.buttons(ANN, last), vote_buttons(ANSWER_ID));
    for earlier in &ids[..ids.len() - 1] {
        assert!(bot.fake.buttons(ANN, *earlier).is_empty(), "message {earlier} of {ids:?} has buttons");
    }

    // A streamed answer in a group gets them with its final edit; what is said instead of
    // an answer gets none.
    bot.fake.push_message(GROUP, ANN, "/ask what is lore?");
    let mut streamed = bot.run.next().await;
    streamed.reply.answer_id("a1");
    stream_sample_answer(&mut *streamed.reply).await;
    let id = *bot.fake.message_ids(GROUP.id()).last().unwrap();
    assert_eq!(bot.fake.buttons(GROUP.id(), id), vote_buttons("a1"));
    bot.fake.push_message(GROUP, ANN, "/help");
    let mut help = bot.run.next().await;
    help.reply.say("Ask me with /ask.").await.unwrap();
    let id = *bot.fake.message_ids(GROUP.id()).last().unwrap();
    assert!(bot.fake.buttons(GROUP.id(), id).is_empty());
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_a_vote_click_is_a_vote_answered_once_with_what_the_router_says() {
    let mut bot = Running::start().await;
    let message = bot.answered(GROUP, "/ask what is lore?", ANSWER_ID).await;

    // Someone else in the group clicks 👎 under it.
    let query = bot.fake.click(GROUP, message, BOB, &format!("vote:down:{ANSWER_ID}"));
    let mut vote = bot.run.next().await;
    assert_eq!(vote.command, Some(Command::Vote { answer: ANSWER_ID.into(), rating: Rating::Down }));
    assert_eq!(vote.text, "");
    assert_eq!((vote.author.id.as_str(), vote.private), (BOB.to_string().as_str(), false));
    assert_eq!(vote.conversation.0, format!("telegram:{}", GROUP.id()));
    assert_eq!(vote.channel, GROUP.id().to_string());
    assert!(bot.fake.click_answers(&query).is_empty(), "answered by what the router says, not before");
    vote.reply.say("Thanks: noted 👎.").await.unwrap();
    assert_eq!(click_answer(&bot.fake, &query).await.as_deref(), Some("Thanks: noted 👎."));
    // Telegram takes one answer per query: a second word is not sent.
    vote.reply.say("And another thing.").await.unwrap();
    drop(vote);
    assert_eq!(bot.fake.requests().iter().filter(|r| r.path == "answerCallbackQuery").count(), 1);
    assert_eq!(bot.fake.shown_in(GROUP.id()).len(), 1, "the thanks is no message in the chat");

    // A click in a private chat; a click the router drops unsaid is still answered.
    let message = bot.answered(PRIVATE, "what is lore?", "b2").await;
    let query = bot.fake.click(PRIVATE, message, ANN, "vote:up:b2");
    let vote = bot.run.next().await;
    assert_eq!(vote.command, Some(Command::Vote { answer: "b2".into(), rating: Rating::Up }));
    assert_eq!((vote.conversation.0.as_str(), vote.private), (format!("telegram:{ANN}").as_str(), true));
    drop(vote);
    assert_eq!(click_answer(&bot.fake, &query).await, None);
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_a_click_that_is_no_vote_is_answered_without_text_and_ignored() {
    let mut bot = Running::start().await;
    let message = bot.answered(PRIVATE, "what is lore?", ANSWER_ID).await;
    let queries = [
        bot.fake.click(PRIVATE, message, ANN, "settings:open"),
        bot.fake.click(PRIVATE, message, ANN, "vote:sideways:abc"),
        bot.fake.click(PRIVATE, message, ANN, "vote:up:not-an-id!"),
    ];
    bot.fake.push_message(PRIVATE, ANN, "marker");
    assert_eq!(bot.run.next().await.text, "marker", "no click became a message");
    for query in &queries {
        assert_eq!(click_answer(&bot.fake, query).await, None, "query {query}");
    }
    bot.run.assert_nothing_more();
    let refused = bot.fake.requests().iter().filter(|r| r.path == "answerCallbackQuery" && r.status != 200).count();
    assert_eq!(refused, 0, "each query answered once");
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_correct_in_reply_to_an_answer_names_it_in_a_group_and_a_forum_topic() {
    let mut bot = Running::start().await;
    let message = bot.answered(GROUP, "/ask what is lore?", ANSWER_ID).await;
    bot.fake.push_message(GROUP, ANN, "/help");
    let mut help = bot.run.next().await;
    help.reply.say("Ask me with /ask.").await.unwrap();
    let not_an_answer = *bot.fake.message_ids(GROUP.id()).last().unwrap();

    bot.fake.push_reply_to(GROUP, BOB, "/correct A question-answering bot.", message);
    let correct = bot.run.next().await;
    assert_eq!(correct.command, Some(Command::Correct { answer: Some(ANSWER_ID.into()) }));
    assert_eq!(correct.text, "/correct A question-answering bot.", "the router takes the command off");
    assert_eq!(correct.author.id, BOB.to_string());
    // Not a reply, or a reply to what was no answer: the router asks for a reply.
    bot.fake.push_message(GROUP, BOB, "/correct@LoreTestBot something");
    assert_eq!(bot.run.next().await.command, Some(Command::Correct { answer: None }));
    bot.fake.push_reply_to(GROUP, BOB, "/correct something", not_an_answer);
    assert_eq!(bot.run.next().await.command, Some(Command::Correct { answer: None }));

    // In a forum topic every message replies to the topic's first one, which names no
    // answer; a real reply names its answer and stays in the topic, and so does a click.
    let topic = bot.fake.open_topic(FORUM, BOT_ID, "Lore help");
    bot.fake.push_topic_message(FORUM, topic, ANN, "@LoreTestBot what is lore?");
    let mut asked = bot.run.next().await;
    let in_topic = answer(&bot.fake, &mut asked, FORUM.id(), "c3", "Lore is a bot.").await;
    let conversation = format!("telegram:{}:{topic}", FORUM.id());
    bot.fake.push_topic_message(FORUM, topic, BOB, "/correct none");
    let plain = bot.run.next().await;
    assert_eq!((plain.command, plain.conversation.0), (Some(Command::Correct { answer: None }), conversation.clone()));
    bot.fake.push_reply_to(FORUM, BOB, "/correct none", in_topic);
    let mut reply = bot.run.next().await;
    assert_eq!(reply.command, Some(Command::Correct { answer: Some("c3".into()) }));
    assert_eq!(reply.conversation.0, conversation);
    reply.reply.say("Saved as a gold question.").await.unwrap();
    assert_eq!(bot.fake.calls("sendMessage").last().unwrap()["message_thread_id"], topic, "confirmed in the topic");
    let query = bot.fake.click(FORUM, in_topic, ANN, "vote:up:c3");
    let mut vote = bot.run.next().await;
    assert_eq!(vote.command, Some(Command::Vote { answer: "c3".into(), rating: Rating::Up }));
    assert_eq!(vote.conversation.0, conversation);
    vote.reply.say("Thanks for the 👍!").await.unwrap();
    assert_eq!(click_answer(&bot.fake, &query).await.as_deref(), Some("Thanks for the 👍!"));
    bot.run.assert_nothing_more();
    bot.run.stop().await;
}
