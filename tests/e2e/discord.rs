//! The Discord adapter (real serenity client) against the fake Discord, and one test of the
//! whole daemon behind it (votes and corrections kept in the feedback store).

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use lore::app::{App, Load};
use lore_adapters::discord::{DiscordAdapter, DiscordConfig};
use lore_adapters::Command;
use lore_core::{parse_vote_button_data, Rating};
use lore_tests::daemon::sample_kb;
use lore_tests::fake_discord::{user, FakeDiscord, Fault, APP_ID, BOT_ID, EPHEMERAL};
use lore_tests::{
    assert_retried_after, assert_words_whole, init, long_answer, lore_binary, sample_sources, stream_sample_answer,
    wait_until, RunningAdapter,
};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const GUILD: u64 = 300;
const CHANNEL: u64 = 301;
const OPEN_CHANNEL: u64 = 302;
const DM_CHANNEL: u64 = 303;
const THREAD: u64 = 304;
const FORUM: u64 = 305;
const FORUM_POST: u64 = 306;
const ALICE: u64 = 401;
const OTHER_BOT: u64 = 402;
const BOB: u64 = 403;
const EDIT_MS: u64 = 200;
const WAIT: Duration = Duration::from_secs(5);

struct Running {
    fake: FakeDiscord,
    run: RunningAdapter,
}

impl Running {
    async fn start() -> Self {
        init();
        let fake = FakeDiscord::start().await;
        let run = RunningAdapter::spawn(Box::new(adapter_for(&fake)));
        // Fails when serenity fell back to the real gateway.
        fake.wait_ready(WAIT).await;
        Self { fake, run }
    }
}

/// The bot `docs` on the fake server.
fn adapter_for(fake: &FakeDiscord) -> DiscordAdapter {
    let cfg: DiscordConfig = serde_json::from_value(json!({
        "api_url": fake.api_url(),
        "respond_to_all": [OPEN_CHANNEL.to_string()],
        "command_guilds": [GUILD],
        "edit_interval_ms": EDIT_MS,
        "request_timeout_secs": 1,
    }))
    .unwrap();
    DiscordAdapter::new("docs", &cfg, "fake-discord-token".into()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discord_bot_counts_as_connected_only_once_ready_arrives() {
    init();
    let fake = FakeDiscord::start().await;
    fake.hold_ready();
    let run = RunningAdapter::spawn(Box::new(adapter_for(&fake)));
    wait_until(WAIT, "the bot identifies", || !fake.ops(2).is_empty()).await;
    assert!(!run.is_connected(), "connected before the gateway said READY");
    fake.release_ready();
    wait_until(WAIT, "the bot is connected once READY arrives", || run.is_connected()).await;
    run.stop().await;
}

/// [`sample_sources`] as they end an answer on Discord.
const SOURCES: &str = "\n\n**Sources**\n\\[1\\] guide.md (lines 1-9)\n\\[2\\] my\\_notes\\<b>\\*.md (lines 12-20)";

fn mention(text: &str) -> String {
    format!("<@{BOT_ID}> {text}")
}

/// An INTERACTION_CREATE payload for the slash command `name`, used by Alice in a DM.
fn slash_command(id: &str, name: &str, token: &str) -> Value {
    json!({
        "id": id,
        "application_id": APP_ID.to_string(),
        "type": 2,
        "data": {"id": "556", "name": name, "type": 1},
        "channel_id": DM_CHANNEL.to_string(),
        "user": user(ALICE, "alice", false),
        "token": token,
        "version": 1,
        "app_permissions": "0",
        "locale": "en-US",
        "entitlements": [],
        "attachment_size_limit": 8_388_608,
    })
}

fn contents(sent: &[(String, Value)]) -> Vec<String> {
    sent.iter().map(|(_, b)| b["content"].as_str().unwrap_or("").to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_mention_streams_typing_edits_and_final_answer_with_sources() {
    let mut bot = Running::start().await;
    let fake = &bot.fake;
    let question =
        fake.send(fake.message(CHANNEL, ALICE, &mention("what is  lore?")).guild(GUILD, &[11, 12]).mentioning_bot());
    let mut incoming = bot.run.next().await;
    assert_eq!(incoming.text, "what is lore?");
    assert_eq!(incoming.conversation.0, format!("discord:{CHANNEL}"));
    assert_eq!(incoming.channel, CHANNEL.to_string());
    assert_eq!(incoming.author.id, ALICE.to_string());
    assert_eq!(incoming.author.roles, vec!["11", "12"]);
    assert_eq!(incoming.command, None);
    assert_eq!(incoming.bot, "docs");

    let answer = stream_sample_answer(&mut *incoming.reply).await;

    let requests = bot.fake.requests();
    let typing = format!("/api/v10/channels/{CHANNEL}/typing");
    let typing_at = requests.iter().position(|r| r.path == typing).expect("typing sent");
    let sent = bot.fake.sent_in(CHANNEL);
    let first_post = requests.iter().position(|r| r.method == "POST" && r.path.ends_with("/messages"));
    assert!(typing_at < first_post.unwrap(), "typing comes before the answer");
    // One message, replying to the question, edited as the answer grows.
    assert_eq!(sent[0].0, "POST");
    assert_eq!(sent[0].1["message_reference"]["message_id"], question.to_string());
    assert!(sent[1..].iter().all(|(m, _)| m == "PATCH"), "{sent:?}");
    assert!(sent.len() >= 3, "streamed edits expected: {sent:?}");
    for (_, body) in &sent {
        assert_eq!(body["allowed_mentions"]["parse"], json!([]), "no pings: {body}");
    }
    assert_eq!(bot.fake.shown_in(CHANNEL), vec![answer + SOURCES]);
    // Edits keep under Discord's limit: at least the configured interval apart.
    let edits: Vec<_> = requests.iter().filter(|r| r.method == "PATCH").collect();
    for pair in edits.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(EDIT_MS - 30), "edits {gap:?} apart");
    }
    // Slash commands registered in the configured guild.
    let put = requests
        .iter()
        .find(|r| r.method == "PUT" && r.path == format!("/api/v10/applications/{APP_ID}/guilds/{GUILD}/commands"))
        .expect("guild commands registered");
    let names: Vec<_> = put.body.as_array().unwrap().iter().map(|c| (c["name"].clone(), c["type"].clone())).collect();
    let slash = |name: &str| (json!(name), Value::Null);
    // `/correct` names the answer it corrects: as the message command, or written as a reply.
    let expected = vec![
        slash("help"),
        slash("sources"),
        slash("reset"),
        slash("kb"),
        slash("forget"),
        (json!("Correct this answer"), json!(3)),
    ];
    assert_eq!(names, expected);
    assert_eq!(put.status, 200, "Discord took them: {:?}", put.body);
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_long_answer_is_split_at_2000_keeping_words_utf8_and_code() {
    let mut bot = Running::start().await;
    bot.fake.send(bot.fake.message(CHANNEL, ALICE, &mention("tell me all")).guild(GUILD, &[]).mentioning_bot());
    let mut incoming = bot.run.next().await;
    let answer = long_answer(5000);
    incoming.reply.finish(&answer, &sample_sources()).await.unwrap();

    let shown = bot.fake.shown_in(CHANNEL);
    assert!(shown.len() >= 3, "{} pieces", shown.len());
    for piece in &shown {
        assert!(piece.chars().count() <= 2000, "piece of {} chars", piece.chars().count());
        assert_eq!(piece.matches("```").count() % 2, 0, "unbalanced code block in {piece:?}");
        // What Discord shows: markdown escapes gone, bold markers rendered.
        assert_words_whole(&piece.replace('\\', "").replace("**", ""), &answer);
    }
    assert!(shown.last().unwrap().contains("guide.md (lines 1-9)"));
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_answers_dm_reply_and_open_channel_but_ignores_bots_self_and_chatter() {
    let mut bot = Running::start().await;
    let fake = &bot.fake;
    // Ignored: another bot mentioning it, its own message, chatter in a normal channel.
    fake.send(fake.message(CHANNEL, OTHER_BOT, &mention("hi")).guild(GUILD, &[]).mentioning_bot().from_bot(OTHER_BOT));
    fake.send(fake.message(OPEN_CHANNEL, BOT_ID, "my own words").guild(GUILD, &[]).from_bot(BOT_ID));
    fake.send(fake.message(CHANNEL, ALICE, "just chatting").guild(GUILD, &[]));
    // Answered.
    fake.send(fake.message(OPEN_CHANNEL, ALICE, "open question").guild(GUILD, &[]));
    fake.send(fake.message(DM_CHANNEL, ALICE, "private question"));
    fake.send(fake.message(CHANNEL, ALICE, "follow-up").guild(GUILD, &[]).replying_to(77, BOT_ID, true));
    fake.send(fake.message(CHANNEL, ALICE, "not to me").guild(GUILD, &[]).replying_to(78, ALICE, false));

    let mut got = Vec::new();
    for _ in 0..3 {
        let incoming = bot.run.next().await;
        got.push((incoming.text.clone(), incoming.conversation.0.clone()));
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("follow-up".to_string(), format!("discord:{CHANNEL}")),
            ("open question".to_string(), format!("discord:{OPEN_CHANNEL}")),
            ("private question".to_string(), format!("discord:dm:{ALICE}")),
        ]
    );
    // A marker sent after all of them: whatever was going to be forwarded has been by now.
    bot.fake.send(bot.fake.message(DM_CHANNEL, ALICE, "marker"));
    assert_eq!(bot.run.next().await.text, "marker");
    bot.run.assert_nothing_more();
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_429_is_retried_after_the_wait_and_answer_arrives_once() {
    let mut bot = Running::start().await;
    bot.fake.send(bot.fake.message(DM_CHANNEL, ALICE, "hello"));
    let mut incoming = bot.run.next().await;
    // Through the REST proxy serenity's rate limiter is off: the wait comes from the 429's
    // body (the default backoff would retry after 1 s).
    bot.fake.rate_limit(Method::POST, &format!("/channels/{DM_CHANNEL}/messages"), 1, 2.5);
    incoming.reply.finish("Hi there.", &[]).await.unwrap();

    let posts: Vec<_> = bot
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with(&format!("{DM_CHANNEL}/messages")))
        .collect();
    assert_retried_after(&posts, Duration::from_millis(2_500));
    assert_eq!(bot.fake.shown_in(DM_CHANNEL), vec!["Hi there."]);
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_gateway_drop_mid_answer_resumes_without_losing_or_repeating() {
    let mut bot = Running::start().await;
    bot.fake.send(bot.fake.message(DM_CHANNEL, ALICE, "first"));
    let mut first = bot.run.next().await;
    first.reply.typing().await.unwrap();
    first.reply.update("Half an ans").await.unwrap();

    bot.fake.drop_gateway();
    // Sent while the socket is down: Discord replays it on resume.
    bot.fake.send(bot.fake.message(DM_CHANNEL, ALICE, "second"));
    first.reply.finish("Half an answer, then the rest.", &[]).await.unwrap();

    let mut second = bot.run.next().await;
    assert_eq!(second.text, "second");
    second.reply.finish("Second answer.", &[]).await.unwrap();
    wait_until(WAIT, "the gateway is live again", || bot.fake.gateway_live()).await;

    assert!(!bot.fake.ops(6).is_empty(), "the client resumed");
    assert_eq!(bot.fake.ops(2).len(), 1, "no new session: nothing lost");
    assert_eq!(bot.fake.shown_in(DM_CHANNEL), vec!["Half an answer, then the rest.", "Second answer."]);
    let posts = bot.fake.sent_in(DM_CHANNEL).iter().filter(|(m, _)| m == "POST").count();
    assert_eq!(posts, 2, "each answer posted once");
    // The replayed and later events are not forwarded again.
    bot.fake.send(bot.fake.message(DM_CHANNEL, ALICE, "marker"));
    assert_eq!(bot.run.next().await.text, "marker");
    bot.run.assert_nothing_more();
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_hostile_text_is_escaped_and_pings_nobody() {
    let mut bot = Running::start().await;
    bot.fake.send(bot.fake.message(DM_CHANNEL, ALICE, "@everyone **hey"));
    let mut incoming = bot.run.next().await;
    let hostile = "@everyone @here **bold _under `tick <@401> [x](http://e.vil) # not a header";
    incoming.reply.update(hostile).await.unwrap();
    incoming.reply.finish(hostile, &[]).await.unwrap();
    incoming.reply.say("`unbalanced ~~ @everyone").await.unwrap();

    let sent = bot.fake.sent_in(DM_CHANNEL);
    for (_, body) in &sent {
        assert_eq!(body["allowed_mentions"]["parse"], json!([]));
    }
    let texts = contents(&sent);
    let expected = "@\u{200B}everyone @\u{200B}here \\*\\*bold \\_under \\`tick \\<@401> \
                    \\[x\\](http://e.vil) # not a header";
    assert_eq!(texts[0], expected);
    assert_eq!(texts.last().unwrap(), "\\`unbalanced \\~\\~ @\u{200B}everyone");
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_text_and_slash_commands_are_parsed() {
    let mut bot = Running::start().await;
    let fake = &bot.fake;
    fake.send(fake.message(CHANNEL, ALICE, &mention("/reset")).guild(GUILD, &[]).mentioning_bot());
    assert_eq!(bot.run.next().await.command, Some(Command::Reset));
    bot.fake.send(bot.fake.message(DM_CHANNEL, ALICE, "/help"));
    assert_eq!(bot.run.next().await.command, Some(Command::Help));

    bot.fake.dispatch("INTERACTION_CREATE", slash_command("555", "sources", "interaction-token"));
    let mut incoming = bot.run.next().await;
    assert_eq!(incoming.command, Some(Command::Sources));
    assert_eq!(incoming.conversation.0, format!("discord:dm:{ALICE}"));
    incoming.reply.say("No sources *yet*.").await.unwrap();

    let requests = bot.fake.requests();
    let callback =
        requests.iter().find(|r| r.path == "/api/v10/interactions/555/interaction-token/callback").expect("deferred");
    assert_eq!(callback.body["type"], 5);
    let edit = requests
        .iter()
        .find(|r| r.path == format!("/api/v10/webhooks/{APP_ID}/interaction-token/messages/@original"))
        .expect("answer in the original response");
    assert_eq!(edit.body["content"], "No sources \\*yet\\*.");
    assert_eq!(edit.body["allowed_mentions"]["parse"], json!([]));
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_threads_and_forum_posts_name_their_parent_channel_after_one_lookup() {
    let mut bot = Running::start().await;
    let fake = &bot.fake;
    fake.add_thread(THREAD, CHANNEL, GUILD);
    fake.add_thread(FORUM_POST, FORUM, GUILD);
    let in_thread = || fake.message(THREAD, ALICE, &mention("in a thread")).guild(GUILD, &[]).mentioning_bot();

    fake.send(in_thread());
    let mut first = bot.run.next().await;
    assert_eq!(first.channel, THREAD.to_string());
    assert_eq!(first.parent_channel, Some(CHANNEL.to_string()));
    assert_eq!(first.conversation.0, format!("discord:{THREAD}"));
    first.reply.say("Answered in the thread.").await.unwrap();
    assert_eq!(bot.fake.shown_in(THREAD), vec!["Answered in the thread."]);

    bot.fake.send(in_thread());
    assert_eq!(bot.run.next().await.parent_channel, Some(CHANNEL.to_string()));
    assert_eq!(bot.fake.channel_lookups(THREAD), 1, "the thread's parent is remembered");

    let fake = &bot.fake;
    fake.send(fake.message(FORUM_POST, ALICE, &mention("in a forum post")).guild(GUILD, &[]).mentioning_bot());
    assert_eq!(bot.run.next().await.parent_channel, Some(FORUM.to_string()));

    // An ordinary channel's parent is its category: no parent channel.
    bot.fake.send(bot.fake.message(CHANNEL, ALICE, &mention("in the channel")).guild(GUILD, &[]).mentioning_bot());
    let in_channel = bot.run.next().await;
    assert_eq!((in_channel.channel, in_channel.parent_channel), (CHANNEL.to_string(), None));
    bot.fake.send(bot.fake.message(DM_CHANNEL, ALICE, "in private"));
    assert_eq!(bot.run.next().await.parent_channel, None);
    assert_eq!(bot.fake.channel_lookups(DM_CHANNEL), 0, "a DM is never a thread");

    // A slash command carries its channel: a thread's parent costs no lookup.
    let mut command = slash_command("557", "kb", "thread-token");
    command["guild_id"] = GUILD.to_string().into();
    command["channel_id"] = FORUM_POST.to_string().into();
    command["channel"] = json!({"id": FORUM_POST.to_string(), "type": 11, "parent_id": FORUM.to_string()});
    command["member"] = json!({
        "user": user(ALICE, "alice", false), "roles": [], "joined_at": "2025-01-01T00:00:00.000000+00:00",
        "deaf": false, "mute": false, "flags": 0,
    });
    bot.fake.dispatch("INTERACTION_CREATE", command);
    let kb = bot.run.next().await;
    assert_eq!((kb.command, kb.parent_channel), (Some(Command::Kb), Some(FORUM.to_string())));
    assert_eq!(bot.fake.channel_lookups(FORUM_POST), 1);
    bot.run.assert_nothing_more();
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_system_messages_are_not_questions_even_when_they_mention_the_bot() {
    let mut bot = Running::start().await;
    let fake = &bot.fake;
    // Member join, pin, thread created: not written as questions.
    for kind in [7, 6, 18] {
        fake.send(fake.message(CHANNEL, ALICE, &mention("system")).guild(GUILD, &[]).mentioning_bot().kind(kind));
    }
    fake.send(fake.message(OPEN_CHANNEL, ALICE, "joined").guild(GUILD, &[]).kind(7));
    fake.send(fake.message(DM_CHANNEL, ALICE, "pinned").kind(6));
    fake.send(fake.message(CHANNEL, ALICE, &mention("a real question")).guild(GUILD, &[]).mentioning_bot());
    let question = bot.run.next().await;
    assert_eq!(question.text, "a real question", "the system messages before it were dropped");
    bot.run.assert_nothing_more();
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_answer_arrives_when_the_question_was_deleted() {
    let mut bot = Running::start().await;
    let question =
        bot.fake.send(bot.fake.message(CHANNEL, ALICE, &mention("quick!")).guild(GUILD, &[]).mentioning_bot());
    let mut incoming = bot.run.next().await;
    bot.fake.delete_message(question);
    incoming.reply.finish("Still answered.", &[]).await.unwrap();

    let sent = bot.fake.sent_in(CHANNEL);
    let reference = &sent[0].1["message_reference"];
    assert_eq!(reference["message_id"], question.to_string());
    assert_eq!(reference["fail_if_not_exists"], false);
    assert_eq!(bot.fake.shown_in(CHANNEL), vec!["Still answered."]);
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_5xx_timeouts_and_a_lost_response_end_in_one_complete_answer() {
    let mut bot = Running::start().await;
    bot.fake.send(bot.fake.message(DM_CHANNEL, ALICE, "what is lore?"));
    let mut incoming = bot.run.next().await;
    let messages = format!("/channels/{DM_CHANNEL}/messages");
    // Posting: a 500, then Discord makes the message but the response is lost.
    bot.fake.inject(Method::POST, &messages, 1, Fault::ServerError(500));
    bot.fake.inject(Method::POST, &messages, 1, Fault::LostResponse);
    // Editing: no answer at all, then a 503.
    bot.fake.inject(Method::PATCH, &messages, 1, Fault::Hang);
    bot.fake.inject(Method::PATCH, &messages, 1, Fault::ServerError(503));

    let answer = stream_sample_answer(&mut *incoming.reply).await;

    assert_eq!(bot.fake.shown_in(DM_CHANNEL), vec![answer + SOURCES], "one complete answer");
    let posts: Vec<_> =
        bot.fake.requests().into_iter().filter(|r| r.method == "POST" && r.path.ends_with(&messages)).collect();
    let nonces: Vec<_> = posts.iter().map(|r| r.body["nonce"].clone()).collect();
    assert!(posts.iter().all(|r| r.body["enforce_nonce"] == true), "{posts:?}");
    assert_eq!(nonces.last(), nonces.get(nonces.len() - 2), "the retry after the lost response reuses its nonce");
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_partial_that_cannot_be_edited_is_replaced_and_deleted() {
    let mut bot = Running::start().await;
    bot.fake.send(bot.fake.message(DM_CHANNEL, ALICE, "first"));
    let mut first = bot.run.next().await;
    first.reply.update("Half an ans").await.unwrap();
    // Discord refuses edits of it from now on (a permission taken away, say).
    bot.fake.inject(Method::PATCH, &format!("/channels/{DM_CHANNEL}/messages"), 10, Fault::ServerError(403));
    first.reply.finish("Half an answer, then the rest.", &[]).await.unwrap();
    assert_eq!(bot.fake.shown_in(DM_CHANNEL), vec!["Half an answer, then the rest."]);
    assert_eq!(bot.fake.message_ids(DM_CHANNEL).len(), 1, "the stale partial was deleted");

    // A moderator deletes the streamed message: the answer arrives anew.
    bot.fake.send(bot.fake.message(DM_CHANNEL, ALICE, "second"));
    let mut second = bot.run.next().await;
    tokio::time::sleep(Duration::from_millis(EDIT_MS)).await;
    second.reply.update("Second ans").await.unwrap();
    assert_eq!(bot.fake.message_ids(DM_CHANNEL).len(), 2, "the second answer streams");
    let streamed = *bot.fake.message_ids(DM_CHANNEL).last().unwrap();
    bot.fake.delete_message(streamed);
    second.reply.finish("Second answer.", &[]).await.unwrap();
    assert_eq!(bot.fake.shown_in(DM_CHANNEL), vec!["Half an answer, then the rest.", "Second answer."]);
    bot.run.stop().await;
}

const ANSWER_ID: &str = "a1b2c3d4e5f6";

/// The custom ids of a message's buttons.
fn buttons(message: &Value) -> Vec<String> {
    let rows = message["components"].as_array().cloned().unwrap_or_default();
    rows.iter()
        .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
        .map(|button| button["custom_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn votes(answer: &str) -> Vec<String> {
    vec![format!("vote:up:{answer}"), format!("vote:down:{answer}")]
}

/// Bob's question in the guild channel, answered by the test as the router would: the
/// answer's id first, then the final text. Returns the answer's last message.
async fn answer_in_channel(bot: &mut Running, text: &str) -> u64 {
    bot.fake.send(bot.fake.message(CHANNEL, BOB, &mention("a question")).guild(GUILD, &[]).mentioning_bot());
    let mut incoming = bot.run.next().await;
    incoming.reply.answer_id(ANSWER_ID);
    incoming.reply.finish(text, &[]).await.unwrap();
    *bot.fake.message_ids(CHANNEL).last().unwrap()
}

/// An interaction's response: its type and whether only its user sees it.
fn response(fake: &FakeDiscord, token: &str) -> (Value, bool) {
    let response = fake.response(token).expect("responded");
    let ephemeral = response["data"]["flags"].as_u64().is_some_and(|f| f & EPHEMERAL != 0);
    (response["type"].clone(), ephemeral)
}

/// What the original response of an interaction shows its user, once it says something.
async fn shown_to_user(fake: &FakeDiscord, token: &str) -> (String, bool) {
    let said = || fake.original(token).filter(|m| m["content"] != "");
    wait_until(WAIT, "the response says something", || said().is_some()).await;
    let message = said().unwrap();
    (message["content"].as_str().unwrap().to_string(), message["flags"] == EPHEMERAL)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_vote_buttons_go_on_the_last_message_of_answers_in_channels_threads_dms_and_commands() {
    let mut bot = Running::start().await;
    // Split in a channel: only the last message has them.
    bot.fake.send(bot.fake.message(CHANNEL, ALICE, &mention("tell me all")).guild(GUILD, &[]).mentioning_bot());
    let mut incoming = bot.run.next().await;
    incoming.reply.answer_id(ANSWER_ID);
    incoming.reply.update("Streaming").await.unwrap();
    incoming.reply.finish(&long_answer(5000), &sample_sources()).await.unwrap();
    let ids = bot.fake.message_ids(CHANNEL);
    assert!(ids.len() >= 3, "{ids:?}");
    let (last, earlier) = ids.split_last().unwrap();
    assert_eq!(buttons(&bot.fake.bot_message(*last)), votes(ANSWER_ID));
    for id in earlier {
        assert!(buttons(&bot.fake.bot_message(*id)).is_empty(), "message {id} has buttons");
    }
    let last = bot.fake.bot_message(*last);
    let emoji: Vec<_> =
        last["components"][0]["components"].as_array().unwrap().iter().map(|b| &b["emoji"]["name"]).collect();
    assert_eq!(emoji, [&json!("👍"), &json!("👎")]);

    // In a thread, and in a DM whose streamed message already shows the final text.
    bot.fake.add_thread(THREAD, CHANNEL, GUILD);
    bot.fake.send(bot.fake.message(THREAD, ALICE, &mention("in a thread")).guild(GUILD, &[]).mentioning_bot());
    bot.fake.send(bot.fake.message(DM_CHANNEL, ALICE, "in private"));
    for _ in [THREAD, DM_CHANNEL] {
        // In either order: the thread's message waits for its channel's lookup.
        let mut incoming = bot.run.next().await;
        let channel: u64 = incoming.channel.parse().unwrap();
        incoming.reply.answer_id(ANSWER_ID);
        incoming.reply.update("Short answer.").await.unwrap();
        incoming.reply.finish("Short answer.", &[]).await.unwrap();
        let ids = bot.fake.message_ids(channel);
        assert_eq!(ids.len(), 1, "one message in {channel}");
        assert_eq!(buttons(&bot.fake.bot_message(ids[0])), votes(ANSWER_ID), "in {channel}");
    }

    // A slash command's answer: in the original response.
    bot.fake.dispatch("INTERACTION_CREATE", slash_command("558", "sources", "answer-token"));
    let mut incoming = bot.run.next().await;
    incoming.reply.answer_id(ANSWER_ID);
    incoming.reply.finish("Answered.", &[]).await.unwrap();
    assert_eq!(buttons(&bot.fake.original("answer-token").unwrap()), votes(ANSWER_ID));
    // What is said instead of an answer has none.
    bot.fake.send(bot.fake.message(DM_CHANNEL, ALICE, "/help"));
    let mut help = bot.run.next().await;
    help.reply.answer_id(ANSWER_ID);
    let before = bot.fake.message_ids(DM_CHANNEL);
    help.reply.say("Help text.").await.unwrap();
    let said = bot.fake.message_ids(DM_CHANNEL).into_iter().find(|id| !before.contains(id)).unwrap();
    assert!(buttons(&bot.fake.bot_message(said)).is_empty());
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_thumbs_up_is_a_vote_thanked_only_to_its_user_even_after_a_restart() {
    let mut bot = Running::start().await;
    let answer = answer_in_channel(&mut bot, "Bees dance.").await;
    let click = bot.fake.click(answer, &format!("vote:up:{ANSWER_ID}"), ALICE).roles(&[11]);
    let token = bot.fake.interact(click);
    let mut vote = bot.run.next().await;
    assert_eq!(vote.command, Some(Command::Vote { answer: ANSWER_ID.into(), rating: Rating::Up }));
    assert_eq!(vote.text, "");
    // Where and who, as for a message from Alice there.
    assert_eq!((vote.bot.as_str(), vote.conversation.0.as_str()), ("docs", format!("discord:{CHANNEL}").as_str()));
    assert_eq!(
        (vote.channel.as_str(), &vote.parent_channel, vote.private),
        (CHANNEL.to_string().as_str(), &None, false)
    );
    assert_eq!(
        (vote.author.id.as_str(), vote.author.roles.as_slice()),
        (ALICE.to_string().as_str(), &["11".to_string()][..])
    );
    // "Thinking…" at once, seen only by Alice; then the router's thanks in its place.
    assert_eq!(response(&bot.fake, &token), (json!(5), true));
    vote.reply.say("Thanks for the 👍!").await.unwrap();
    assert_eq!(shown_to_user(&bot.fake, &token).await, ("Thanks for the 👍!".to_string(), true));
    assert_eq!(bot.fake.shown_in(CHANNEL), ["Bees dance."], "nothing new in the channel");

    // The answer's id is in the button: a click after a restart still names it.
    bot.run.stop().await;
    let run = RunningAdapter::spawn(Box::new(adapter_for(&bot.fake)));
    let mut bot = Running { fake: bot.fake, run };
    wait_until(WAIT, "the bot identifies again", || bot.fake.ops(2).len() == 2).await;
    bot.fake.interact(bot.fake.click(answer, &format!("vote:up:{ANSWER_ID}"), ALICE));
    let again = bot.run.next().await;
    assert_eq!(again.command, Some(Command::Vote { answer: ANSWER_ID.into(), rating: Rating::Up }));

    // A button this bot does not know is answered all the same, not left to fail.
    let unknown = bot.fake.interact(bot.fake.click(answer, "poll:yes", ALICE));
    wait_until(WAIT, "the unknown button is answered", || bot.fake.response(&unknown).is_some()).await;
    assert_eq!(response(&bot.fake, &unknown), (json!(4), true));
    bot.run.assert_nothing_more();
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_thumbs_down_counts_and_asks_what_was_wrong_whose_reason_is_thanked() {
    let mut bot = Running::start().await;
    bot.fake.add_thread(THREAD, CHANNEL, GUILD);
    bot.fake.send(bot.fake.message(THREAD, BOB, &mention("in a thread")).guild(GUILD, &[]).mentioning_bot());
    let mut question = bot.run.next().await;
    question.reply.answer_id(ANSWER_ID);
    question.reply.finish("Bees sing.", &[]).await.unwrap();
    let answer = bot.fake.message_ids(THREAD)[0];

    let click = bot.fake.interact(bot.fake.click(answer, &format!("vote:down:{ANSWER_ID}"), ALICE));
    let mut vote = bot.run.next().await;
    assert_eq!(vote.command, Some(Command::Vote { answer: ANSWER_ID.into(), rating: Rating::Down }));
    assert_eq!((vote.text.as_str(), vote.parent_channel.clone()), ("", Some(CHANNEL.to_string())));
    assert_eq!(bot.fake.channel_lookups(THREAD), 1, "the click describes its thread: no lookup of its own");
    // The click's one response is the form; what the router says to the click goes nowhere.
    let form = bot.fake.response(&click).expect("a form");
    assert_eq!(form["type"], 9);
    assert_eq!(form["data"]["custom_id"], format!("why:{ANSWER_ID}"));
    assert_eq!(form["data"]["title"], "What was wrong?");
    vote.reply.say("Thanks: noted 👎.").await.unwrap();
    assert_eq!(bot.fake.original(&click), None);

    let sent = bot.fake.submit_form(&click, &[("reason", "  Bees dance, they do not sing. ")]);
    let mut reason = bot.run.next().await;
    assert_eq!(reason.command, Some(Command::Vote { answer: ANSWER_ID.into(), rating: Rating::Down }));
    assert_eq!(reason.text, "Bees dance, they do not sing.");
    assert_eq!(
        (reason.author.id.clone(), reason.conversation.0.clone()),
        (ALICE.to_string(), format!("discord:{THREAD}"))
    );
    assert_eq!(response(&bot.fake, &sent), (json!(5), true));
    reason.reply.say("Thanks: noted what was wrong.").await.unwrap();
    assert_eq!(shown_to_user(&bot.fake, &sent).await, ("Thanks: noted what was wrong.".to_string(), true));
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_correct_this_answer_opens_a_form_whose_text_is_the_correction_of_that_answer() {
    let mut bot = Running::start().await;
    let answer = answer_in_channel(&mut bot, "Bees sing.").await;
    let used = bot.fake.interact(bot.fake.message_command("Correct this answer", answer, BOB));
    wait_until(WAIT, "the form is shown", || bot.fake.response(&used).is_some()).await;
    let form = bot.fake.response(&used).unwrap();
    assert_eq!((&form["type"], &form["data"]["custom_id"]), (&json!(9), &json!(format!("correct:{ANSWER_ID}"))));

    let sent = bot.fake.submit_form(&used, &[("answer", "Bees dance."), ("source", "bees.md")]);
    let mut correction = bot.run.next().await;
    assert_eq!(correction.command, Some(Command::Correct { answer: Some(ANSWER_ID.into()) }));
    assert_eq!(correction.text, "/correct Bees dance.\nsource: bees.md");
    assert_eq!(correction.author.id, BOB.to_string());
    correction.reply.say("Sorry, only this bot's admins can do that here.").await.unwrap();
    let refusal = shown_to_user(&bot.fake, &sent).await;
    assert_eq!(refusal, ("Sorry, only this bot's admins can do that here.".to_string(), true));

    // Without a source; and on a message that is no answer, a note instead of a form.
    let used = bot.fake.interact(bot.fake.message_command("Correct this answer", answer, BOB));
    wait_until(WAIT, "the form is shown", || bot.fake.response(&used).is_some()).await;
    bot.fake.submit_form(&used, &[("answer", "none")]);
    assert_eq!(bot.run.next().await.text, "/correct none");
    bot.fake.send(bot.fake.message(DM_CHANNEL, ALICE, "/help"));
    bot.run.next().await.reply.say("Help text.").await.unwrap();
    let help = *bot.fake.message_ids(DM_CHANNEL).last().unwrap();
    let used = bot.fake.interact(bot.fake.message_command("Correct this answer", help, ALICE));
    wait_until(WAIT, "the note is shown", || bot.fake.response(&used).is_some()).await;
    assert_eq!(response(&bot.fake, &used), (json!(4), true));
    assert!(shown_to_user(&bot.fake, &used).await.0.starts_with("That is not one of my answers"));
    bot.run.assert_nothing_more();
    bot.run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_correct_written_as_a_reply_names_the_answer_replied_to() {
    let mut bot = Running::start().await;
    let answer = answer_in_channel(&mut bot, "Bees sing.").await;
    let reply =
        bot.fake.message(CHANNEL, BOB, "/correct Bees dance.").guild(GUILD, &[]).replying_to(answer, BOT_ID, true);
    bot.fake.send(reply);
    let correction = bot.run.next().await;
    assert_eq!(correction.command, Some(Command::Correct { answer: Some(ANSWER_ID.into()) }));
    assert_eq!(correction.text, "/correct Bees dance.");

    // A reply to a message without buttons names no answer: the router says how.
    let reply = bot.fake.message(CHANNEL, BOB, "/correct Bees dance.").guild(GUILD, &[]).replying_to(77, BOT_ID, true);
    bot.fake.send(reply);
    assert_eq!(bot.run.next().await.command, Some(Command::Correct { answer: None }));
    bot.run.stop().await;
}

const BEES_QUESTION: &str = "How do honeybees tell each other where the flowers are?";

/// Polls an async `check` until it holds, for the store's writes that happen in the
/// background.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends back the form shown for `used` as `fields`, and returns what its user is then told
/// (the daemon writes to its store first: on a busy machine that may take a while).
async fn fill_in(fake: &FakeDiscord, used: &str, fields: &[(&str, &str)]) -> String {
    let a_while = Duration::from_secs(30);
    wait_until(a_while, "the form is shown", || fake.response(used).is_some()).await;
    let sent = fake.submit_form(used, fields);
    let said = || fake.original(&sent).is_some_and(|m| m["content"] != "");
    wait_until(a_while, "the daemon says something", said).await;
    let (said, ephemeral) = shown_to_user(fake, &sent).await;
    assert!(ephemeral, "{said}");
    said
}

/// The whole daemon (`lore run`'s serve loop, the real models, the feedback store) with the
/// Discord bot `docs` on the fake, Bob its admin.
#[tokio::test(flavor = "multi_thread")]
async fn discord_through_the_daemon_a_reason_is_thanked_and_only_an_admins_correction_becomes_gold() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeDiscord::start().await;
    std::env::set_var("LORE_TEST_DISCORD_TOKEN", "fake-discord-token");
    let bot = format!(
        "bots:\n  docs:\n    knowledge_base: bees\n    admins: [\"{BOB}\"]\n    adapter:\n      type: discord\n      token_env: LORE_TEST_DISCORD_TOKEN\n      api_url: {}\n      edit_interval_ms: 300\n",
        fake.api_url()
    );
    let config = lore_tests::models::config(dir.path(), &format!("{}{bot}", sample_kb()));
    let lore = |args: &[&str]| {
        let out =
            std::process::Command::new(lore_binary()).arg("--config").arg(&config.file).args(args).output().unwrap();
        assert!(out.status.success(), "lore {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    lore(&["ingest", "--kb", "bees"]);
    let app = Arc::new(App::load(config.clone(), Load::All).await.unwrap());
    let adapters = lore::service::run::adapter_specs(&app.config).unwrap();
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(lore::service::run::run_until(app.clone(), adapters, shutdown.clone()));
    fake.wait_ready(Duration::from_secs(30)).await;

    fake.send(fake.message(CHANNEL, ALICE, &mention(BEES_QUESTION)).guild(GUILD, &[]).mentioning_bot());
    let with_buttons = || fake.message_ids(CHANNEL).into_iter().find(|id| !buttons(&fake.bot_message(*id)).is_empty());
    wait_until(Duration::from_secs(120), "the answer has its buttons", || with_buttons().is_some()).await;
    let answer = with_buttons().unwrap();
    let (_, answer_id) = parse_vote_button_data(&buttons(&fake.bot_message(answer))[0]).unwrap();
    let feedback = app.feedback().unwrap();
    eventually("the answer is kept", || async { feedback.answer(&answer_id).await.unwrap().is_some() }).await;

    // Alice's 👎 counts at once (kept before she sends the reason, so that the two do not
    // race), and the reason she gives is thanked for and kept with it.
    let click = fake.interact(fake.click(answer, &format!("vote:down:{answer_id}"), ALICE));
    eventually("the 👎 is kept", || async { feedback.votes(Some("docs"), None).await.unwrap().len() == 1 }).await;
    let reason = "It should say that they dance.";
    assert_eq!(fill_in(&fake, &click, &[("reason", reason)]).await, "Thanks: noted what was wrong.");
    // This test's own handle on the store sees the daemon's writes within seconds.
    let kept = || async {
        let votes = feedback.votes(Some("docs"), None).await.unwrap();
        votes.iter().map(|v| (v.rating, v.comment.clone())).collect::<Vec<_>>() == [(Rating::Down, Some(reason.into()))]
    };
    eventually("the reason is kept with the 👎, in place of it", kept).await;

    // Alice may not correct the answer; Bob, an admin, may.
    let right = [("answer", "With the waggle dance."), ("source", "honeybees.md")];
    let alices = fake.interact(fake.message_command("Correct this answer", answer, ALICE));
    assert_eq!(fill_in(&fake, &alices, &right).await, "Sorry, only this bot's admins can do that here.");
    let bobs = fake.interact(fake.message_command("Correct this answer", answer, BOB));
    let saved = fill_in(&fake, &bobs, &right).await;
    assert!(saved.starts_with("Saved as a gold question") && saved.contains(BEES_QUESTION), "{saved}");

    let exported = lore(&["gold", "export", "--bot", "docs"]);
    let cases: Vec<Value> = exported.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(cases.len(), 1, "{exported}");
    let case = &cases[0];
    assert_eq!(
        (&case["question"], &case["answer"], &case["source"]),
        (&json!(BEES_QUESTION), &json!("With the waggle dance."), &json!("honeybees.md"))
    );
    shutdown.cancel();
    daemon.await.unwrap().unwrap();
}
