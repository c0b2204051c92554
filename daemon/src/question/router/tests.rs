//! The router's rules with a stand-in answerer: no models, no knowledge bases.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lore_core::{Author, ConversationKey, GenerateError, SourceRef};

use super::*;
use crate::config::Config;

const CONFIG: &str = "\
models:
  generator:
    path: /models/gen.gguf
  embedder:
    path: /models/emb.gguf
knowledge_bases:
  bees: {}
  normans: {}
bots:
  docs:
    knowledge_base: bees
    memory_turns: 2
    admins: [ann]
    allow:
      users: [ann, bob]
    channels:
      normandy:
        knowledge_base: normans
        retrieval:
          top_k: 3
  other:
    knowledge_base: bees
";

/// Answers with the place's knowledge base and the history it was given, so tests can
/// see which place a message went to and what the bot remembered.
struct Stand {
    /// Every answer fails with this error (or panics, for the message "panic").
    fail: Option<fn() -> anyhow::Error>,
    /// When set, every answer waits until this is notified.
    gate: Option<Arc<tokio::sync::Semaphore>>,
    /// When set, answers go through this pipeline (see [`piped_router`]).
    pipeline: Option<crate::question::pipeline::Pipeline>,
}

#[async_trait]
impl Answerer for Stand {
    type Route = Place;

    fn route(&self, place: Place) -> anyhow::Result<Place> {
        Ok(place)
    }

    async fn answer(
        &self,
        place: &Place,
        question: &str,
        history: &[Turn],
        reranking: Reranking,
        sink: &mut dyn ReplySink,
    ) -> anyhow::Result<Outcome> {
        if let Some(fail) = self.fail {
            let error = fail();
            if error.to_string() == "panic" {
                panic!("the answerer broke: index out of bounds at /secret/path");
            }
            return Err(error);
        }
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        if let Some(pipeline) = &self.pipeline {
            return piped(pipeline, place, question, history, sink).await;
        }
        let asked: Vec<&str> = history.iter().map(|t| t.question.as_str()).collect();
        let text = format!("{} top_k={} after {asked:?}: {question} ({reranking:?})", place.kb, place.retrieval.top_k);
        let hit = lore_core::Hit {
            chunk: lore_core::Chunk::new(&format!("{}.md", place.kb), 0, 1, 3, "Bees dance.".into()),
            score: 1.0,
            similarity: Some(0.9),
            lexical: None,
        };
        sink.finish(&text, &[]).await?;
        Ok(Outcome {
            text,
            passages: vec![hit.clone()],
            abstained: false,
            stop: None,
            retrieval_time: Duration::ZERO,
            first_token: None,
            total_time: Duration::ZERO,
            generated_tokens: 0,
            quote: None,
            judged: Default::default(),
            sources: crate::question::pipeline::SourceNames::default().refs(std::slice::from_ref(&hit)),
        })
    }

    async fn chunks(&self, place: &Place) -> anyhow::Result<usize> {
        Ok(if place.kb == "bees" { 12 } else { 0 })
    }
}

#[derive(Clone, Default)]
struct Said(Arc<Mutex<Vec<String>>>);

#[async_trait]
impl ReplySink for Said {
    async fn typing(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    async fn update(&mut self, text: &str) -> anyhow::Result<()> {
        self.0.lock().unwrap().push(format!("~{text}"));
        Ok(())
    }
    async fn finish(&mut self, text: &str, _: &[SourceRef]) -> anyhow::Result<()> {
        self.0.lock().unwrap().push(text.to_string());
        Ok(())
    }
    async fn say(&mut self, text: &str) -> anyhow::Result<()> {
        self.0.lock().unwrap().push(text.to_string());
        Ok(())
    }
    fn answer_id(&mut self, id: &str) {
        self.0.lock().unwrap().push(format!("#{id}"));
    }
}

fn router(fail: Option<fn() -> anyhow::Error>) -> Arc<Router<Stand>> {
    let config = Config::parse(Path::new("/etc/lore/lore.yaml"), CONFIG).unwrap();
    Arc::new(Router::new(&config, Stand { fail, gate: None, pipeline: None }, None).unwrap())
}

/// A router answering one question at a time, each answer waiting for a permit of the
/// returned gate; `extra` is appended to the config.
fn gated_router(extra: &str) -> (Arc<Router<Stand>>, Arc<tokio::sync::Semaphore>) {
    let text = CONFIG.replace("    path: /models/gen.gguf\n", "    path: /models/gen.gguf\n    parallel: 1\n") + extra;
    let config = Config::parse(Path::new("lore.yaml"), &text).unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    (
        Arc::new(Router::new(&config, Stand { fail: None, gate: Some(gate.clone()), pipeline: None }, None).unwrap()),
        gate,
    )
}

/// What the router said back to `user` in `channel` for `text` (the last reply).
async fn ask(router: &Arc<Router<Stand>>, bot: &str, user: &str, channel: &str, text: &str) -> String {
    ask_in(router, bot, user, channel, None, text).await
}

/// Like [`ask`], in a thread opened in `parent` when given; channels named `dm-…` are
/// private chats.
async fn ask_in(
    router: &Arc<Router<Stand>>,
    bot: &str,
    user: &str,
    channel: &str,
    parent: Option<&str>,
    text: &str,
) -> String {
    let said = Said::default();
    router.handle(message(bot, user, channel, parent, text, Command::parse(text), &said)).await;
    said.finals().last().cloned().unwrap_or_default()
}

/// A message of `user` in `channel` (private when named `dm-…`), replied to in `said`.
fn message(
    bot: &str,
    user: &str,
    channel: &str,
    parent: Option<&str>,
    text: &str,
    command: Option<Command>,
    said: &Said,
) -> Incoming {
    Incoming {
        bot: bot.into(),
        conversation: ConversationKey(format!("test:{channel}")),
        channel: channel.into(),
        parent_channel: parent.map(String::from),
        private: channel.starts_with("dm-"),
        author: Author { id: user.into(), name: user.into(), roles: vec![] },
        text: text.into(),
        command,
        reply: Box::new(said.clone()),
    }
}

/// What `router` says to `command` from `user` in `channel`.
async fn command(router: &Arc<Router<Stand>>, user: &str, channel: &str, text: &str, command: Command) -> String {
    let said = Said::default();
    router.handle(message("docs", user, channel, None, text, Some(command), &said)).await;
    said.finals().last().cloned().unwrap_or_default()
}

#[tokio::test]
async fn votes_corrections_and_forget_reach_the_feedback_store_and_only_admins_correct() {
    use crate::question::feedback::Feedback;
    use lore_core::Rating;
    // Counting starts with the recorder.
    crate::metrics::handle();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse(Path::new("/etc/lore/lore.yaml"), CONFIG).unwrap();
    let store = lore_knowledge::KbStore::open(&dir.path().join("data")).await.unwrap();
    let feedback =
        Arc::new(Feedback::open(&store, &dir.path().join("feedback.salt"), Duration::from_secs(86_400)).unwrap());
    let stand = Stand { fail: None, gate: None, pipeline: None };
    let r = Arc::new(Router::new(&config, stand, None).unwrap().with_feedback(feedback.clone()));

    let said = Said::default();
    r.handle(message("docs", "bob", "lobby", None, "Why do bees dance?", None, &said)).await;
    let id = said.0.lock().unwrap().iter().find_map(|m| m.strip_prefix('#').map(String::from)).expect("an answer id");
    assert_eq!(id.len(), 12);
    let mut kept = None;
    for _ in 0..100 {
        kept = feedback.answer(&id).await.unwrap();
        if kept.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kept = kept.expect("the answer is kept, in the background");
    assert_eq!((kept.bot.as_str(), kept.platform.as_str(), kept.channel.as_str()), ("docs", "test", "lobby"));
    assert_eq!(kept.question, "Why do bees dance?");
    assert_eq!(kept.sources.len(), 1);

    let vote = |rating| Command::Vote { answer: id.clone(), rating };
    assert_eq!(command(&r, "bob", "lobby", "", vote(Rating::Up)).await, "Thanks for the 👍!");
    assert_eq!(command(&r, "bob", "lobby", "too vague", vote(Rating::Down)).await, "Thanks: noted what was wrong.");
    let votes = feedback.votes(Some("docs"), None).await.unwrap();
    assert_eq!(votes.len(), 1, "bob's second click replaced his first");
    assert_eq!((votes[0].rating, votes[0].comment.as_deref()), (Rating::Down, Some("too vague")));

    let correct = || Command::Correct { answer: Some(id.clone()) };
    let refused = command(&r, "bob", "lobby", "/correct To show the way", correct()).await;
    assert_eq!(refused, "Sorry, only this bot's admins can do that here.");
    assert!(feedback.gold(None, None).await.unwrap().is_empty());
    let unreplied = command(&r, "ann", "lobby", "/correct To show the way", Command::Correct { answer: None }).await;
    assert!(unreplied.starts_with("Reply to one of my answers"), "{unreplied}");
    let empty = command(&r, "ann", "lobby", "/correct", correct()).await;
    assert!(empty.contains("/correct none"), "{empty}");
    let saved = command(&r, "ann", "lobby", "/correct To show the way source: bees.md", correct()).await;
    assert!(saved.starts_with("Saved as a gold question: \"Why do bees dance?\""), "{saved}");
    let gold = feedback.gold(Some("docs"), None).await.unwrap();
    assert_eq!((gold[0].answer.as_deref(), gold[0].source.as_deref()), (Some("To show the way"), Some("bees.md")));
    let unknown = command(&r, "ann", "lobby", "/correct x", Command::Correct { answer: Some("nope".into()) }).await;
    assert!(unknown.starts_with("Sorry, there is no answer"), "{unknown}");

    ask(&r, "docs", "bob", "normandy", "Who came first?").await;
    command(&r, "bob", "normandy", "", vote(Rating::Up)).await;
    let metrics = crate::metrics::handle().render();
    let has = |name: &str, labels: &[&str]| {
        metrics.lines().any(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
    };
    assert!(has("lore_votes_total", &["bot=\"docs\"", "channel=\"default\"", "rating=\"down\""]), "{metrics}");
    assert!(
        has("lore_votes_total", &["channel=\"normandy\"", "rating=\"up\""]),
        "a configured channel is a label of its own"
    );
    assert!(has("lore_questions_total", &["bot=\"docs\"", "channel=\"normandy\""]), "{metrics}");
    assert!(!metrics.contains("channel=\"lobby\""), "a channel nobody configured is counted as the bot's default");

    let forgot = command(&r, "bob", "lobby", "/forget", Command::Forget).await;
    assert_eq!(forgot, "Done: I forgot 1 vote, 2 answers to your questions.", "one vote per answer, wherever clicked");
    assert!(feedback.votes(None, None).await.unwrap().is_empty());
    assert!(feedback.answer(&id).await.unwrap().is_none());
}

impl Said {
    /// What was said or finished, without the streamed updates.
    fn finals(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().filter(|m| !m.starts_with('~') && !m.starts_with('#')).cloned().collect()
    }

    fn updates(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().filter_map(|m| m.strip_prefix('~')).map(String::from).collect()
    }
}

fn incoming(bot: &str, user: &str, text: &str, said: &Said) -> Incoming {
    Incoming {
        bot: bot.into(),
        conversation: ConversationKey(format!("test:{user}")),
        channel: user.into(),
        parent_channel: None,
        private: true,
        author: Author { id: user.into(), name: user.into(), roles: vec![] },
        text: text.into(),
        command: Command::parse(text),
        reply: Box::new(said.clone()),
    }
}

#[tokio::test]
async fn questions_wait_their_turn_seeing_their_place_and_skip_the_llm_reranker_while_others_wait() {
    let (r, gate) = gated_router("");
    let users = ["u1", "u2", "u3"];
    let said: Vec<Said> = users.iter().map(|_| Said::default()).collect();
    let mut tasks = vec![];
    for (user, said) in users.iter().zip(&said) {
        // Arrival order is the order of the line, however the tasks are scheduled.
        tasks.push(tokio::spawn(r.handle(incoming("other", user, "Why?", said))));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    // u1 is being answered, u2 and u3 wait and were told where they stand.
    assert_eq!(r.line().waiting(), 2);
    for _ in 0..3 {
        gate.add_permits(1);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(1), t).await.unwrap().unwrap();
    }
    let replies: Vec<String> = said.iter().map(|s| s.finals().join(" | ")).collect();
    assert!(replies.iter().all(|r| r.starts_with("bees top_k=12")), "{replies:?}");
    assert!(replies[0].ends_with("(Full)"), "nobody was waiting when u1's turn came: {}", replies[0]);
    assert!(replies[1].ends_with("(WithoutLlm)"), "u3 was waiting behind u2: {}", replies[1]);
    assert!(replies[2].ends_with("(Full)"), "nobody was waiting behind u3: {}", replies[2]);
    assert!(said[0].updates().is_empty(), "u1 never waited");
    assert_eq!(said[1].updates(), vec!["(waiting: 1st in line)"]);
    assert_eq!(said[2].updates(), vec!["(waiting: 2nd in line)", "(waiting: 1st in line)"]);
}

#[tokio::test]
async fn a_full_line_and_a_fast_asker_are_told_so() {
    let (r, gate) = gated_router(
        "line:\n  max_waiting_questions: 1\n  per_user_in_flight: 5\n  rate_limit: {questions: 2, per_seconds: 3600}\n",
    );
    let s1 = Said::default();
    let first = tokio::spawn(r.handle(incoming("other", "a", "one", &s1)));
    let s2 = Said::default();
    let second = tokio::spawn(r.handle(incoming("other", "b", "two", &s2)));
    tokio::time::sleep(Duration::from_millis(30)).await;
    let full = ask(&r, "other", "c", "c", "three").await;
    assert!(full.contains("too many questions are waiting (1 in line)"), "{full}");
    gate.add_permits(10);
    first.await.unwrap();
    second.await.unwrap();
    ask(&r, "other", "a", "a", "four").await;
    let limited = ask(&r, "other", "a", "a", "five").await;
    assert!(
        limited.starts_with("Sorry, you are asking faster than I can answer (at most 2 questions every 3600 s)"),
        "{limited}"
    );
}

#[tokio::test]
async fn a_channel_answers_from_its_own_knowledge_base_and_settings() {
    let r = router(None);
    assert!(ask(&r, "docs", "ann", "lobby", "Why?").await.starts_with("bees top_k=12"));
    assert!(ask(&r, "docs", "ann", "normandy", "Who?").await.starts_with("normans top_k=3"));
    assert!(ask(&r, "docs", "ann", "normandy", "/kb").await.contains("\"normans\" (empty)"));
    assert!(ask(&r, "docs", "ann", "lobby", "/kb").await.contains("\"bees\" (12 chunks)"));
}

#[tokio::test]
async fn a_thread_answers_like_its_parent_channel_unless_configured_itself() {
    let r = router(None);
    let reply = ask_in(&r, "docs", "bob", "thread-1", Some("normandy"), "Who?").await;
    assert!(reply.starts_with("normans top_k=3"), "{reply}");
    let reply = ask_in(&r, "docs", "bob", "thread-2", Some("lobby"), "Who?").await;
    assert!(reply.starts_with("bees top_k=12"), "{reply}");
    // A configured thread keeps its own settings, whatever its parent.
    let reply = ask_in(&r, "docs", "bob", "normandy", Some("lobby"), "Who?").await;
    assert!(reply.starts_with("normans"), "{reply}");
}

#[tokio::test]
async fn kb_and_group_resets_are_for_admins_and_anyone_resets_their_own_private_chat() {
    let r = router(None);
    let refused = "Sorry, only this bot's admins can do that here.";
    assert_eq!(ask(&r, "docs", "bob", "lobby", "/kb").await, refused);
    assert_eq!(ask(&r, "docs", "bob", "lobby", "/reset").await, refused);
    assert!(ask(&r, "docs", "ann", "lobby", "/kb").await.contains("\"bees\""));
    assert!(ask(&r, "docs", "ann", "lobby", "/reset").await.contains("forgot"));
    assert!(ask(&r, "docs", "bob", "dm-bob", "/reset").await.contains("forgot"));
}

#[tokio::test]
async fn the_allow_list_refuses_before_anything_is_answered() {
    let r = router(None);
    let reply = ask(&r, "docs", "mallory", "lobby", "Why?").await;
    assert!(reply.starts_with("Sorry, I only answer"), "{reply}");
    assert!(ask(&r, "other", "mallory", "lobby", "Why?").await.starts_with("bees"), "an open bot answers anyone");
}

#[tokio::test]
async fn memory_is_kept_per_bot_and_conversation_and_reset_forgets_it() {
    let r = router(None);
    ask(&r, "docs", "ann", "lobby", "first").await;
    ask(&r, "docs", "ann", "lobby", "second").await;
    assert!(ask(&r, "docs", "ann", "lobby", "third").await.contains("[\"first\", \"second\"]: third"));
    assert!(ask(&r, "docs", "ann", "lobby", "fourth").await.contains("[\"second\", \"third\"]"), "memory_turns: 2");
    // Another bot in the same channel has its own memory.
    assert!(ask(&r, "other", "ann", "lobby", "hello").await.contains("after []: hello"));
    assert!(ask(&r, "docs", "ann", "lobby", "/sources").await.contains("[1] bees.md (lines 1-3)"));
    assert_eq!(ask(&r, "other", "ann", "elsewhere", "/sources").await, "The last answer had no sources.");
    assert!(ask(&r, "docs", "ann", "lobby", "/reset").await.contains("forgot"));
    assert!(ask(&r, "docs", "ann", "lobby", "again").await.contains("after []: again"));
    assert!(ask(&r, "other", "ann", "lobby", "more").await.contains("after [\"hello\"]"), "reset one bot only");
}

#[tokio::test]
async fn help_and_empty_questions_explain_the_bot() {
    let r = router(None);
    for text in ["/help", "   "] {
        let reply = ask(&r, "docs", "ann", "lobby", text).await;
        assert!(reply.starts_with("I am docs.") && reply.contains("/sources"), "{reply}");
    }
}

#[tokio::test]
async fn a_panic_while_answering_is_logged_and_answered_with_an_error_id() {
    let r = router(Some(|| anyhow::anyhow!("panic")));
    let reply = ask(&r, "docs", "ann", "lobby", "Why?").await;
    assert!(reply.contains("(error ") && !reply.contains("secret"), "{reply}");
    // The router, and the line, go on.
    assert_eq!(r.line().waiting(), 0);
    assert!(ask(&r, "docs", "ann", "lobby", "/help").await.starts_with("I am docs."));
}

#[tokio::test]
async fn internal_errors_reach_the_chat_as_an_id_and_reasons_for_the_user_as_words() {
    let r = router(Some(|| anyhow::anyhow!("LanceDB: IO error at /secret/path").context("retrieving")));
    let reply = ask(&r, "docs", "ann", "lobby", "Why?").await;
    assert!(reply.contains("(error ") && !reply.contains("secret") && !reply.contains("LanceDB"), "{reply}");
    let r = router(Some(|| anyhow::Error::from(GenerateError::QueueFull(64)).context("starting the answer")));
    let reply = ask(&r, "docs", "ann", "lobby", "Why?").await;
    assert!(reply.contains("too many questions are waiting"), "{reply}");
}

/// A platform that takes the final text only when `released` has a permit: a rate limit
/// or an outage during the final delivery.
struct SlowFinal {
    entered: Arc<tokio::sync::Notify>,
    released: Arc<tokio::sync::Semaphore>,
    said: Said,
}

#[async_trait]
impl ReplySink for SlowFinal {
    async fn typing(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    async fn update(&mut self, text: &str) -> anyhow::Result<()> {
        self.said.update(text).await
    }
    async fn finish(&mut self, text: &str, sources: &[SourceRef]) -> anyhow::Result<()> {
        self.entered.notify_one();
        self.released.acquire().await.unwrap().forget();
        self.said.finish(text, sources).await
    }
    async fn say(&mut self, text: &str) -> anyhow::Result<()> {
        self.said.say(text).await
    }
}

#[tokio::test]
async fn the_place_in_line_is_given_back_before_a_slow_final_delivery() {
    let text = CONFIG.replace("    path: /models/gen.gguf\n", "    path: /models/gen.gguf\n    parallel: 1\n");
    let config = Config::parse(Path::new("lore.yaml"), &text).unwrap();
    let r = Arc::new(Router::new(&config, Stand { fail: None, gate: None, pipeline: None }, None).unwrap());
    let (entered, released) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Semaphore::new(0)));
    let slow = Said::default();
    let mut first = incoming("other", "a", "one", &slow);
    first.reply = Box::new(SlowFinal { entered: entered.clone(), released: released.clone(), said: slow.clone() });
    let first = tokio::spawn(r.handle(first));
    entered.notified().await;
    // The one generation slot is free while the first answer waits for its platform.
    let second = tokio::time::timeout(Duration::from_secs(5), ask(&r, "other", "b", "b", "two")).await;
    assert!(second.expect("the next question was answered").contains("two"));
    assert!(slow.finals().is_empty(), "the first answer is still being delivered");
    released.add_permits(1);
    first.await.unwrap();
    assert_eq!(slow.finals().len(), 1, "delivered once: {:?}", slow.finals());
    assert_eq!((r.line().answering(), r.line().waiting()), (0, 0));
}

#[tokio::test]
async fn one_person_with_questions_waiting_is_told_so_politely_and_others_still_get_in() {
    let (r, gate) = gated_router("line:\n  max_waiting_per_person: 2\n");
    let said: Vec<Said> = (0..3).map(|_| Said::default()).collect();
    // One answered now, two waiting: the flood's share of the line.
    let tasks: Vec<_> = said.iter().map(|s| tokio::spawn(r.handle(incoming("other", "flood", "Why?", s)))).collect();
    let refused = ask(&r, "other", "flood", "flood", "And why?").await;
    assert_eq!(refused, "Sorry, you already have 2 questions waiting; I will answer those first.");
    let other = Said::default();
    let others = tokio::spawn(r.handle(incoming("other", "someone", "Who?", &other)));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(r.line().waiting(), 3, "someone else still got a place");
    gate.add_permits(10);
    for t in tasks.into_iter().chain([others]) {
        tokio::time::timeout(Duration::from_secs(1), t).await.unwrap().unwrap();
    }
    assert!(other.finals().last().unwrap().starts_with("bees"), "{:?}", other.finals());
}

#[tokio::test]
async fn an_api_history_of_seventeen_thousand_turns_is_cut_to_memory_turns_first() {
    let r = router(None);
    let history: Vec<Turn> = (0..17_000).map(|i| Turn { question: format!("q{i}"), answer: format!("a{i}") }).collect();
    let ticket = r.admit("docs", "api-key-0").unwrap();
    let mut sink = Said::default();
    let outcome = r.answer_with("docs", ticket, "Why?", &history, &mut sink).await.unwrap();
    // The stand-in answers with the questions of the history it was given.
    assert!(outcome.text.ends_with("after [\"q16998\", \"q16999\"]: Why? (Full)"), "memory_turns: 2: {}", outcome.text);
}

#[tokio::test]
async fn an_api_key_is_capped_on_questions_to_bots_and_not_on_work_for_the_generator() {
    let (r, _gate) = gated_router("line:\n  max_waiting_per_person: 2\n");
    let _answering = r.line().join("someone else").unwrap();
    let asked: Vec<_> = (0..2).map(|_| r.admit("docs", "api-key-0").unwrap()).collect();
    assert_eq!(r.admit("docs", "api-key-0").err(), Some(Refusal::TooManyWaiting { waiting: 2 }));
    // Another Lore using this one as its engine sends a request per rerank candidate.
    let engine_work: Vec<_> = (0..12).map(|_| r.admit("SmolLM2-135M-Instruct", "api-key-0")).collect();
    assert!(
        engine_work.iter().all(Result::is_ok),
        "{:?}",
        engine_work.iter().map(|w| w.as_ref().err()).collect::<Vec<_>>()
    );
    drop(asked);
}

/// A router whose answers go through the real pipeline on lore-core's stand-in models (a
/// chat model that echoes a fixed answer, a hashing embedder), from one passage given in
/// place of a knowledge base's retrieval.
fn piped_router() -> Arc<Router<Stand>> {
    use lore_core::testing::{EchoModel, HashEmbedder};
    let cx =
        lore_core::PluginContext { embedder: Arc::new(HashEmbedder { dim: 64 }), scorer: None, cross_encoder: None };
    let pipeline = crate::question::pipeline::Pipeline {
        model: Arc::new(EchoModel::new(512, "They dance on the comb [1].")),
        max_answer_tokens: 32,
        sampling: Default::default(),
        evidence: crate::question::evidence::EvidenceFinder::new(&cx),
    };
    let config = Config::parse(Path::new("lore.yaml"), CONFIG).unwrap();
    Arc::new(Router::new(&config, Stand { fail: None, gate: None, pipeline: Some(pipeline) }, None).unwrap())
}

async fn piped(
    pipeline: &crate::question::pipeline::Pipeline,
    place: &Place,
    question: &str,
    history: &[Turn],
    sink: &mut dyn ReplySink,
) -> anyhow::Result<Outcome> {
    use crate::question::pipeline::{respond, Judging, Retrieved, Voice};
    let chunk = lore_core::Chunk::new("bees.md", 0, 1, 3, "Bees dance on the comb to show where flowers grow.".into());
    let hits = vec![lore_core::Hit { chunk, score: 1.0, similarity: Some(0.9), lexical: None }];
    let signals = crate::question::confidence::Signals::of_retrieval(&hits, Some(1.0), false);
    let retrieved = Retrieved { hits, signals };
    let voice = Voice::of(&place.template);
    let judging = Judging::default();
    let answer =
        pipeline.answer_from(&place.retrieval, voice, question, history, retrieved, judging, Duration::ZERO).await?;
    respond(answer, sink).await
}

/// A platform whose first try at the final text fails: the adapter's retry is logged
/// while the answer is delivered, as `adapters/src/stream.rs` logs it.
struct RetriedFinal(Said);

#[async_trait]
impl ReplySink for RetriedFinal {
    async fn typing(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    async fn update(&mut self, text: &str) -> anyhow::Result<()> {
        self.0.update(text).await
    }
    async fn finish(&mut self, text: &str, sources: &[SourceRef]) -> anyhow::Result<()> {
        tracing::warn!(error = "502 Bad Gateway", retry_in_ms = 1, "a platform call failed; retrying");
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.0.finish(text, sources).await
    }
    async fn say(&mut self, text: &str) -> anyhow::Result<()> {
        self.0.say(text).await
    }
}

/// The `question_id` a line of text output carries, if any.
fn question_id_of(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("question_id=")?;
    rest.split(|c: char| !c.is_ascii_hexdigit()).next()
}

#[tokio::test]
async fn every_log_line_of_a_question_carries_its_id_from_the_line_to_the_delivery_retries() {
    let (subscriber, logs) = crate::logs::captured(crate::logs::LogFormat::Text);
    let _logging = tracing::subscriber::set_default(subscriber);
    let r = piped_router();
    // Two questions at once, handled as the daemon's loop handles them: spawned.
    let said: Vec<Said> = (0..2).map(|_| Said::default()).collect();
    let tasks: Vec<_> = ["u1", "u2"]
        .iter()
        .zip(&said)
        .map(|(user, said)| {
            let mut msg = incoming("other", user, "Why do bees dance?", said);
            msg.reply = Box::new(RetriedFinal(said.clone()));
            tokio::spawn(r.handle(msg))
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(5), t).await.unwrap().unwrap();
    }
    for s in &said {
        assert_eq!(s.finals(), vec!["They dance on the comb [1]."]);
    }
    let text = logs.text();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.iter().all(|l| question_id_of(l).is_some()), "a line without its question:\n{text}");
    let mut ids: Vec<&str> = lines.iter().filter_map(|l| question_id_of(l)).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2, "one id per question: {ids:?}\n{text}");
    for id in ids {
        let of_it: Vec<&str> = lines.iter().copied().filter(|l| question_id_of(l) == Some(id)).collect();
        // The span's fields on every line, and each step of the answer in order.
        assert!(of_it.iter().all(|l| l.contains("question{bot=other platform=test conversation=test:u")), "{of_it:#?}");
        let steps = ["question in line", "generating", "a platform call failed; retrying", "answered"];
        let found: Vec<&str> = of_it.iter().filter_map(|l| steps.into_iter().find(|s| l.contains(s))).collect();
        assert_eq!(found, steps, "{of_it:#?}");
    }
}

#[tokio::test]
async fn the_error_id_in_the_chat_is_the_question_id_of_the_failures_log_line() {
    let (subscriber, logs) = crate::logs::captured(crate::logs::LogFormat::Text);
    let _logging = tracing::subscriber::set_default(subscriber);
    let r = router(Some(|| anyhow::anyhow!("LanceDB: IO error at /secret/path").context("retrieving")));
    let reply = ask(&r, "docs", "ann", "lobby", "Why?").await;
    let id = reply.split_once("(error ").and_then(|(_, rest)| rest.split_once(')')).map(|(id, _)| id).unwrap();
    let text = logs.text();
    let failed = text.lines().find(|l| l.contains("answer failed")).expect("the failure is logged");
    assert_eq!(question_id_of(failed), Some(id), "{failed}");
    assert!(failed.contains("retrieving: LanceDB: IO error at /secret/path"), "the cause is in the log: {failed}");
}

#[tokio::test]
async fn json_log_lines_name_the_question_in_their_span_with_the_id_the_chat_shows() {
    let (subscriber, logs) = crate::logs::captured(crate::logs::LogFormat::Json);
    let _logging = tracing::subscriber::set_default(subscriber);
    let r = router(Some(|| anyhow::anyhow!("the engine is gone")));
    let reply = ask(&r, "docs", "ann", "lobby", "Why?").await;
    let text = logs.text();
    let lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let failed = lines.iter().find(|l| l["message"] == "answer failed").unwrap_or_else(|| panic!("{text}"));
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["target"], "lore::question::router");
    assert_eq!(failed["error"], "the engine is gone");
    let span = &failed["span"];
    assert_eq!(span["name"], "question");
    assert_eq!(
        (&span["bot"], &span["platform"], &span["conversation"]),
        (&"docs".into(), &"test".into(), &"test:lobby".into())
    );
    let id = span["question_id"].as_str().unwrap();
    assert!(reply.contains(&format!("(error {id})")), "{reply} / {failed}");
    assert_eq!(failed["spans"][0]["question_id"], id);
}

#[tokio::test]
async fn an_api_question_is_logged_in_the_span_admit_starts() {
    let (subscriber, logs) = crate::logs::captured(crate::logs::LogFormat::Text);
    let _logging = tracing::subscriber::set_default(subscriber);
    let r = piped_router();
    let admitted = r.admit("docs", "api-key-0").unwrap();
    let id = admitted.question.id.clone();
    let mut sink = Said::default();
    r.answer_with("docs", admitted, "Why do bees dance?", &[], &mut sink).await.unwrap();
    let text = logs.text();
    let span = format!("question{{bot=docs platform=api conversation=api-key-0 question_id={id}}}");
    for step in ["question in line", "generating", "answered"] {
        let line = text.lines().find(|l| l.contains(step)).unwrap_or_else(|| panic!("no {step:?}:\n{text}"));
        assert!(line.contains(&span), "{line}");
    }
}
