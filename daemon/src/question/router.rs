//! Where a message enters: every adapter feeds the router, which applies allow-lists,
//! runs commands, picks the channel's way of answering and hands questions to an
//! [`Answerer`] (the pipeline in the daemon, a stand-in in tests).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use futures::FutureExt;
use lore_core::{panic_message, Command, Incoming, ReplySink};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{Allow, Config, Retrieval};
use crate::metrics::Labels;
use crate::question::feedback::{AnswerRecord, Correction, Feedback, FeedbackError};
use crate::question::line::{Line, LineSettings, Refusal, Ticket, Wait};
use crate::question::memory::{Memory, ShownSource};
use crate::question::pipeline::{Outcome, Reranking};
use crate::question::prompt::{Template, Turn};

/// Where and how a bot answers in one place (its default, or a configured channel), as
/// the config says; the answerer turns it into its own resolved form once, at start.
#[derive(Debug, Clone)]
pub struct Place {
    pub kb: String,
    pub retrieval: Retrieval,
    pub template: Template,
    /// The bot's LoRA adapter, applied to its answers.
    pub lora: Option<lore_core::LoraAdapter>,
    /// The language it answers in when the config says: the bot's `language`, else its
    /// knowledge base's unless `auto` (then the one stored at ingest).
    pub language: Option<lore_knowledge::Language>,
}

/// Where bot `name` answers outside its configured channels.
pub fn bot_place(config: &Config, name: &str) -> anyhow::Result<Place> {
    let b = config.bot(name)?;
    let base = config.file.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    Ok(Place {
        kb: b.knowledge_base.clone(),
        retrieval: config.retrieval.with(&b.retrieval),
        template: Template::load(b.prompt.as_deref(), b.system.as_deref(), &base)?,
        lora: b.adapters.first().cloned(),
        language: b.language.or_else(|| config.kb_language(&b.knowledge_base)),
    })
}

/// Where bot `name` answers in its configured channel `id`: the channel's settings over
/// the bot's.
pub fn channel_place(config: &Config, name: &str, id: &str) -> anyhow::Result<Place> {
    let mut place = bot_place(config, name)?;
    if let Some(c) = config.bots[name].channels.get(id) {
        place.kb = c.knowledge_base.clone().unwrap_or(place.kb);
        place.language = config.bots[name].language.or_else(|| config.kb_language(&place.kb));
        place.retrieval = place.retrieval.with(&c.retrieval);
    }
    Ok(place)
}

/// Answers questions for the router.
#[async_trait]
pub trait Answerer: Send + Sync {
    /// A place resolved for answering (retriever and rerankers built, and so on).
    type Route: Send + Sync;
    /// Resolves a place once, when the router is built.
    fn route(&self, place: Place) -> anyhow::Result<Self::Route>;
    /// Answers `question` into `sink` (streaming, then finishing with sources).
    async fn answer(
        &self,
        route: &Self::Route,
        question: &str,
        history: &[Turn],
        reranking: Reranking,
        sink: &mut dyn ReplySink,
    ) -> anyhow::Result<Outcome>;
    /// How many chunks the place's knowledge base holds.
    async fn chunks(&self, route: &Self::Route) -> anyhow::Result<usize>;
    /// The version of the place's knowledge base (its table's), when it has one: an
    /// answer's record names what it answered from.
    async fn kb_version(&self, _route: &Self::Route) -> anyhow::Result<Option<u64>> {
        Ok(None)
    }
}

/// A bot with its places resolved.
struct Bot<R> {
    allow: Allow,
    /// User ids who may run `/kb`, `/correct`, and `/reset` where others talk too.
    admins: Vec<String>,
    memory_turns: usize,
    default: Routed<R>,
    channels: BTreeMap<String, Routed<R>>,
}

struct Routed<R> {
    kb: String,
    route: R,
}

pub struct Router<A: Answerer> {
    answerer: A,
    bots: BTreeMap<String, Bot<A::Route>>,
    memory: Memory,
    line: Line,
    rerank_when_busy: bool,
    /// Fired when the daemon stops and answers ran out of time.
    give_up: CancellationToken,
    /// Where answers, votes and corrections are kept; `None` keeps none (and says so).
    feedback: Option<Arc<Feedback>>,
    /// The answers' records being written, waited for at shutdown.
    keeping: tokio_util::task::TaskTracker,
    /// The generator, as an answer's record names it.
    model: String,
}

/// An answer ended by a stop (see [`Router::give_up_answers`]).
#[derive(Debug, thiserror::Error)]
#[error("{RESTARTING}")]
pub struct Restarting;

/// The platform label of questions that came through the HTTP API.
const API: &str = "api";

/// What an asker sees when the daemon stopped before their answer was done.
pub const RESTARTING: &str = "Sorry, I am restarting and could not finish this answer. Please ask again in a minute.";

/// One question in the log: every line written while it is answered — in line,
/// retrieval, the engine's job, a remote engine's retries, the platform's delivery
/// retries — is written inside `span`, whose `question_id` field is `id`. When answering
/// fails, `id` is also the error id the asker is shown, so it finds every line of it.
#[derive(Debug, Clone)]
pub struct QuestionSpan {
    /// A short id, made once per question where it enters.
    pub id: String,
    pub span: tracing::Span,
}

impl QuestionSpan {
    /// A new id and its span `question{bot, platform, conversation, question_id}`.
    pub fn new(bot: &str, platform: &str, conversation: &str) -> Self {
        let id = question_id();
        // Context, not a message: at the error level the span is on whenever any line is
        // written (the default filter is `warn`), so a warning still names its question.
        let span = tracing::error_span!("question", bot = %bot, platform = %platform, conversation = %conversation, question_id = %id);
        Self { id, span }
    }
}

/// A question from the HTTP API that has its place in line, and its span from there on.
pub struct Admitted {
    pub ticket: Ticket,
    pub question: QuestionSpan,
    /// Who asked (the API key's name).
    pub asker: String,
}

/// Where an answer was given, for its record.
struct Given<'a> {
    id: &'a str,
    bot: &'a str,
    platform: &'a str,
    channel: &'a str,
    question: &'a str,
    /// Who asked, on `platform`.
    asker: &'a str,
}

impl<A: Answerer> Router<A> {
    /// Resolves every bot's default place and configured channels; conversation memory
    /// lives under `memory` (RAM only when `None`).
    pub fn new(config: &Config, answerer: A, memory: Option<std::path::PathBuf>) -> anyhow::Result<Self> {
        let mut bots = BTreeMap::new();
        let mut max_turns = 1;
        for (name, b) in &config.bots {
            let resolve = |place: Place| -> anyhow::Result<Routed<A::Route>> {
                Ok(Routed { kb: place.kb.clone(), route: answerer.route(place)? })
            };
            let default = resolve(bot_place(config, name)?)?;
            let mut channels = BTreeMap::new();
            for id in b.channels.keys() {
                channels.insert(id.clone(), resolve(channel_place(config, name, id)?)?);
            }
            max_turns = max_turns.max(b.memory_turns);
            let bot = Bot {
                allow: b.allow.clone(),
                admins: b.admins.clone(),
                memory_turns: b.memory_turns,
                default,
                channels,
            };
            bots.insert(name.clone(), bot);
        }
        let a = &config.line;
        let line = Line::new(LineSettings {
            concurrent: config.models.generator.parallel(),
            max_waiting: a.max_waiting_questions,
            max_waiting_per_person: a.max_waiting_per_person,
            per_user_in_flight: a.per_user_in_flight,
            rate_limit: a.rate_limit.as_ref().map(|r| (r.questions, std::time::Duration::from_secs(r.per_secs))),
        });
        Ok(Self {
            answerer,
            bots,
            memory: Memory::new(memory, max_turns, config.memory_age()),
            line,
            rerank_when_busy: a.rerank_when_busy,
            give_up: CancellationToken::new(),
            feedback: None,
            keeping: tokio_util::task::TaskTracker::new(),
            model: config.models.generator.name(),
        })
    }

    /// Keeps every answer, and the votes and corrections on them, in `feedback`.
    pub fn with_feedback(mut self, feedback: Arc<Feedback>) -> Self {
        self.feedback = Some(feedback);
        self
    }

    /// Where answers and votes are kept, if anywhere.
    pub fn feedback(&self) -> Option<&Arc<Feedback>> {
        self.feedback.as_ref()
    }

    /// The line every question waits in.
    pub fn line(&self) -> &Line {
        &self.line
    }

    /// The bots' names, in order.
    pub fn bots(&self) -> impl Iterator<Item = &str> {
        self.bots.keys().map(String::as_str)
    }

    /// Whether a bot of this name is configured.
    pub fn has_bot(&self, bot: &str) -> bool {
        self.bots.contains_key(bot)
    }

    /// Takes a place in line for `asker` (a question from the HTTP API to `model`, a bot or
    /// the generator itself): refused at once when the line is full, the asker already has
    /// `max_waiting_per_person` questions to bots waiting, or asks too often, before any
    /// answer is promised. Work for the generator itself is not capped per person: another
    /// Lore using this one as its engine asks for many at once.
    ///
    /// The question's span starts here: the caller runs the rest of the request in
    /// `Admitted::question`'s span (as [`Router::answer_with`] does).
    pub fn admit(&self, model: &str, asker: &str) -> Result<Admitted, Refusal> {
        let question = QuestionSpan::new(model, API, asker);
        let labels = api_labels(model);
        crate::metrics::question(&labels);
        let joined = if self.has_bot(model) { self.line.join(asker) } else { self.line.join_for_engine_work(asker) };
        let ticket = joined.inspect_err(|refusal| {
            crate::metrics::refusal(&labels);
            question.span.in_scope(|| tracing::info!(%refusal, "question refused"));
        })?;
        Ok(Admitted { ticket, question, asker: asker.to_string() })
    }

    /// Answers a question from the HTTP API in bot `bot`'s default place, once `ticket`'s
    /// turn comes: the same retrieval, rerankers, abstention and line as in the chats, with
    /// the conversation the caller sent (`history`, cut to the bot's newest `memory_turns`
    /// as a chat's memory is) instead of the remembered one.
    pub async fn answer_with(
        &self,
        bot: &str,
        admitted: Admitted,
        question: &str,
        history: &[Turn],
        sink: &mut dyn ReplySink,
    ) -> anyhow::Result<Outcome> {
        let Admitted { ticket, question: traced, asker } = admitted;
        let answering = async {
            let Some(b) = self.bots.get(bot) else {
                anyhow::bail!("no bot named {bot:?}");
            };
            let history = &history[history.len().saturating_sub(b.memory_turns)..];
            tracing::debug!(waiting = ticket.position(), "question in line");
            let turn = tokio::select! {
                turn = ticket.turn(|_| {}) => turn,
                () = self.give_up.cancelled() => return Err(Restarting.into()),
            };
            let reranking = self.reranking(&turn);
            sink.answer_id(&traced.id);
            let mut sink = TurnUntilFinal { sink, turn: Some(turn) };
            let answered = tokio::select! {
                answered = self.answerer.answer(&b.default.route, question, history, reranking, &mut sink) => answered,
                () = self.give_up.cancelled() => Err(Restarting.into()),
            };
            match &answered {
                Ok(outcome) => {
                    crate::metrics::answered(&api_labels(bot), outcome.figures());
                    log_answered(outcome);
                    let given = Given { id: &traced.id, bot, platform: API, channel: &asker, question, asker: &asker };
                    self.keep_answer(&given, &b.default, outcome).await;
                }
                Err(_) => crate::metrics::error(&api_labels(bot)),
            }
            answered
        };
        let span = traced.span.clone();
        answering.instrument(span).await
    }

    /// Keeps the record of an answer given, when feedback is kept: its store's write runs
    /// in the background, so it never delays an answer or the next question.
    async fn keep_answer(&self, given: &Given<'_>, place: &Routed<A::Route>, outcome: &Outcome) {
        let Some(feedback) = self.feedback.clone() else { return };
        let kb_version = self.answerer.kb_version(&place.route).await.unwrap_or_else(|error| {
            tracing::debug!(error = format!("{error:#}"), "the knowledge base's version is unknown");
            None
        });
        let record = AnswerRecord {
            id: given.id.to_string(),
            bot: given.bot.to_string(),
            platform: given.platform.to_string(),
            channel: given.channel.to_string(),
            question: given.question.to_string(),
            answer: outcome.text.clone(),
            sources: outcome
                .sources
                .iter()
                .map(|s| crate::question::feedback::ShownSource {
                    number: s.number,
                    source: s.source.clone(),
                    location: s.location.clone(),
                })
                .collect(),
            abstained: outcome.abstained,
            confidence: outcome.confidence(),
            model: self.model.clone(),
            kb: place.kb.clone(),
            kb_version,
            first_token_ms: outcome.first_token.map(|t| t.as_millis() as u64),
            total_ms: outcome.total_time.as_millis() as u64,
            time_ms: crate::question::feedback::now_ms(),
        };
        let asker = feedback.person(given.platform, given.asker);
        let keeping = async move {
            if let Err(error) = feedback.record_answer(&record, &asker).await {
                tracing::warn!(error = format!("{error:#}"), "keeping the answer for feedback failed");
            }
        };
        self.keeping.spawn(keeping.in_current_span());
    }

    /// Waits, up to `within`, for the answers' records still being written: an answer
    /// given just before a stop can still be voted on and corrected after it.
    pub async fn finish_keeping(&self, within: std::time::Duration) {
        self.keeping.close();
        if tokio::time::timeout(within, self.keeping.wait()).await.is_err() {
            tracing::warn!(left = self.keeping.len(), "stopping before every answer was kept for feedback");
        }
    }

    /// The `llm` reranker is skipped for a turn that came while others waited, unless
    /// `line.rerank_when_busy`.
    fn reranking(&self, turn: &crate::question::line::Slot) -> Reranking {
        if turn.busy && !self.rerank_when_busy {
            Reranking::WithoutLlm
        } else {
            Reranking::Full
        }
    }

    /// Ends every answer still in progress (or waiting in line) with [`RESTARTING`], in
    /// place of its partial text.
    pub fn give_up_answers(&self) {
        self.give_up.cancel();
    }

    /// Handles one message; failures are logged and reported to the user, never fatal.
    ///
    /// A question takes its place in line before this returns (the returned future does
    /// the rest): called in the order messages arrive, the line keeps that order however
    /// the futures are then scheduled.
    pub fn handle(self: &Arc<Self>, mut msg: Incoming) -> impl Future<Output = ()> + Send + 'static
    where
        A: 'static,
    {
        let router = self.clone();
        let platform = crate::metrics::platform(&msg.conversation.0);
        let traced = QuestionSpan::new(&msg.bot, platform, &msg.conversation.0);
        let question = self.is_question_for_us(&msg);
        if question {
            crate::metrics::question(&self.labels(&msg));
        }
        let place_in_line = question.then(|| self.line.join(&asker(&msg)));
        let span = traced.span.clone();
        async move {
            let handled = {
                // A panic while answering is one failed answer, not a dead daemon.
                let inner = std::panic::AssertUnwindSafe(router.handle_inner(&mut msg, place_in_line, &traced.id))
                    .catch_unwind();
                tokio::select! {
                    handled = inner => Some(handled),
                    () = router.give_up.cancelled() => None,
                }
            };
            let error = match handled {
                Some(Ok(Ok(()))) => return,
                Some(Ok(Err(error))) => error,
                Some(Err(panic)) => anyhow::anyhow!("panicked: {}", panic_message(&*panic)),
                None => {
                    tracing::info!("answer given up: stopping");
                    if let Err(error) = msg.reply.say(RESTARTING).await {
                        tracing::warn!(error = format!("{error:#}"), "telling the asker to ask again failed");
                    }
                    return;
                }
            };
            crate::metrics::error(&router.labels(&msg));
            // The span's `question_id` is the id the asker is shown.
            tracing::warn!(error = format!("{error:#}"), "answer failed");
            let _ = msg.reply.say(&user_message(&error, &traced.id)).await;
        }
        .instrument(span)
    }

    /// How the counters label a message's place.
    fn labels<'m>(&self, msg: &'m Incoming) -> Labels<'m> {
        let channel = self.bots.get(&msg.bot).map_or(DEFAULT_CHANNEL, |b| b.channel_label(msg));
        Labels { bot: &msg.bot, platform: crate::metrics::platform(&msg.conversation.0), channel }
    }

    /// A question (not a command) to a known bot from someone it answers.
    fn is_question_for_us(&self, msg: &Incoming) -> bool {
        msg.command.is_none() && !msg.text.trim().is_empty() && self.bots.get(&msg.bot).is_some_and(|b| b.allows(msg))
    }

    async fn handle_inner(
        &self,
        msg: &mut Incoming,
        place_in_line: Option<Result<Ticket, Refusal>>,
        id: &str,
    ) -> anyhow::Result<()> {
        let Some(bot) = self.bots.get(&msg.bot) else {
            anyhow::bail!("no bot named {:?}", msg.bot);
        };
        if !bot.allows(msg) {
            tracing::info!(user = %msg.author.id, channel = %msg.channel, "refused: not on the allow-list");
            return msg.reply.say("Sorry, I only answer people this bot has been set up for.").await;
        }
        let place = bot.place(msg);
        let admin = bot.admins.contains(&msg.author.id);
        // Two bots in one channel keep separate conversations.
        let conversation = format!("{}/{}", msg.bot, msg.conversation);
        match msg.command.clone() {
            Some(Command::Help) => msg.reply.say(&help_text(&msg.bot)).await,
            // In a private chat the conversation is the asker's own to forget.
            Some(Command::Reset) if msg.private || admin => self.reset(&conversation, msg.reply.as_mut()).await,
            Some(Command::Kb) if admin => self.describe_kb(place, msg.reply.as_mut()).await,
            Some(Command::Correct { answer }) if admin => self.correct(msg, answer.as_deref()).await,
            Some(command @ (Command::Reset | Command::Kb | Command::Correct { .. })) => {
                tracing::info!(user = %msg.author.id, ?command, "refused: admin command");
                msg.reply.say("Sorry, only this bot's admins can do that here.").await
            }
            Some(Command::Sources) => self.last_sources(&conversation, msg.reply.as_mut()).await,
            Some(Command::Vote { answer, rating }) => self.vote(msg, &answer, rating).await,
            Some(Command::Forget) => self.forget(msg, &conversation).await,
            None => match place_in_line {
                None => msg.reply.say(&help_text(&msg.bot)).await,
                Some(Err(refusal)) => {
                    crate::metrics::refusal(&self.labels(msg));
                    tracing::info!(user = %msg.author.id, %refusal, "question refused");
                    msg.reply.say(&format!("Sorry, {refusal}.")).await
                }
                Some(Ok(ticket)) => self.answer(bot, place, &conversation, ticket, msg, id).await,
            },
        }
    }

    /// Records the vote of `user` (on `platform`) on answer `answer` of `bot`, replacing
    /// their earlier one.
    pub async fn record_vote(
        &self,
        at: &Labels<'_>,
        user: &str,
        answer: &str,
        rating: lore_core::Rating,
        comment: Option<&str>,
    ) -> Result<crate::question::feedback::Vote, FeedbackError> {
        let feedback = self.feedback.as_ref().ok_or(FeedbackError::NotKept)?;
        let person = feedback.person(at.platform, user);
        let vote = feedback.vote(at.bot, answer, &person, rating, comment).await?;
        crate::metrics::vote(at, rating.as_str());
        tracing::info!(answer, rating = rating.as_str(), with_reason = vote.comment.is_some(), "vote recorded");
        Ok(vote)
    }

    /// A 👍/👎 click: recorded, and thanked for as the platform expects.
    async fn vote(&self, msg: &mut Incoming, answer: &str, rating: lore_core::Rating) -> anyhow::Result<()> {
        let comment = Some(msg.text.trim()).filter(|t| !t.is_empty());
        match self.record_vote(&self.labels(msg), &msg.author.id, answer, rating, comment).await {
            Ok(_) => {
                let thanks = match (rating, comment) {
                    (lore_core::Rating::Up, _) => "Thanks for the 👍!",
                    (lore_core::Rating::Down, None) => "Thanks: noted 👎.",
                    (lore_core::Rating::Down, Some(_)) => "Thanks: noted what was wrong.",
                };
                msg.reply.say(thanks).await
            }
            Err(FeedbackError::NotKept) => msg.reply.say("Thanks! (This bot does not keep votes.)").await,
            Err(e @ FeedbackError::OtherBot { .. }) => msg.reply.say(&format!("Sorry, {e}.")).await,
            Err(e) => Err(e.into()),
        }
    }

    /// An admin's `/correct` in reply to an answer: a gold case of its question.
    async fn correct(&self, msg: &mut Incoming, answer: Option<&str>) -> anyhow::Result<()> {
        let Some(feedback) = &self.feedback else {
            return msg.reply.say("Sorry, this bot keeps no answers to correct (it has no data directory).").await;
        };
        let Some(answer) = answer else {
            return msg.reply.say("Reply to one of my answers with `/correct THE RIGHT ANSWER` (or `/correct none` when the documents do not cover it).").await;
        };
        let correction = match Correction::parse(lore_core::command_argument(&msg.text)) {
            Ok(c) => c,
            Err(problem) => return msg.reply.say(&format!("Sorry, {problem}.")).await,
        };
        match feedback.correct(&msg.bot, answer, &correction).await {
            Ok(gold) => {
                tracing::info!(answer, no_answer = gold.answer.is_none(), "gold case made");
                let said = match &gold.answer {
                    Some(right) => format!("Saved as a gold question: \"{}\" → \"{right}\".", gold.question),
                    None => format!("Saved as a gold question the documents do not answer: \"{}\".", gold.question),
                };
                msg.reply.say(&said).await
            }
            Err(e @ (FeedbackError::UnknownAnswer(_) | FeedbackError::OtherBot { .. })) => {
                msg.reply.say(&format!("Sorry, {e}.")).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `/forget`: the asker's votes, the answers to their questions, and this
    /// conversation's memory when it is theirs alone.
    async fn forget(&self, msg: &mut Incoming, conversation: &str) -> anyhow::Result<()> {
        let mut forgot = Vec::new();
        if let Some(feedback) = &self.feedback {
            let person = feedback.person(crate::metrics::platform(&msg.conversation.0), &msg.author.id);
            let (votes, answers) = feedback.forget(&person).await?;
            forgot.push(format!("{votes} vote{}", if votes == 1 { "" } else { "s" }));
            forgot.push(format!("{answers} answer{} to your questions", if answers == 1 { "" } else { "s" }));
        }
        if msg.private {
            self.memory.reset(conversation).await;
            forgot.push("this conversation".to_string());
        }
        tracing::info!("a person's records forgotten");
        let said = if forgot.is_empty() {
            "There was nothing of yours to forget here.".to_string()
        } else {
            format!("Done: I forgot {}.", forgot.join(", "))
        };
        msg.reply.say(&said).await
    }

    async fn reset(&self, conversation: &str, reply: &mut dyn ReplySink) -> anyhow::Result<()> {
        self.memory.reset(conversation).await;
        reply.say("Done: I forgot this conversation.").await
    }

    async fn describe_kb(&self, place: &Routed<A::Route>, reply: &mut dyn ReplySink) -> anyhow::Result<()> {
        let size = match self.answerer.chunks(&place.route).await? {
            0 => "empty".to_string(),
            n => format!("{n} chunks"),
        };
        reply.say(&format!("This channel answers from the knowledge base \"{}\" ({size}).", place.kb)).await
    }

    async fn last_sources(&self, conversation: &str, reply: &mut dyn ReplySink) -> anyhow::Result<()> {
        let sources = self.memory.last_sources(conversation);
        let text = if sources.is_empty() {
            "The last answer had no sources.".to_string()
        } else {
            sources
                .iter()
                .map(|s| format!("[{}] {} ({})\n{}", s.number, s.source, s.location, s.text))
                .collect::<Vec<_>>()
                .join("\n\n")
        };
        reply.say(&text).await
    }

    async fn answer(
        &self,
        bot: &Bot<A::Route>,
        place: &Routed<A::Route>,
        conversation: &str,
        mut ticket: Ticket,
        msg: &mut Incoming,
        id: &str,
    ) -> anyhow::Result<()> {
        let question = msg.text.trim();
        tracing::debug!(user = %msg.author.id, channel = %msg.channel, waiting = ticket.position(), "question in line");
        msg.reply.typing().await?;
        let turn = loop {
            match ticket.wait().await {
                Wait::Moved(position) => msg.reply.update(&waiting_text(position)).await?,
                Wait::Turn(turn) => break turn,
            }
        };
        let reranking = self.reranking(&turn);
        let history = self.memory.turns(conversation);
        let history = &history[history.len().saturating_sub(bot.memory_turns)..];
        msg.reply.answer_id(id);
        let mut sink = TurnUntilFinal { sink: msg.reply.as_mut(), turn: Some(turn) };
        let outcome = self.answerer.answer(&place.route, question, history, reranking, &mut sink).await?;
        let labels = self.labels(msg);
        crate::metrics::answered(&labels, outcome.figures());
        log_answered(&outcome);
        let shown: Vec<ShownSource> = outcome
            .sources
            .iter()
            .cloned()
            .zip(&outcome.passages)
            .map(|(r, h)| ShownSource {
                number: r.number,
                source: r.source,
                location: r.location,
                text: h.chunk.text.clone(),
            })
            .collect();
        // Memory first: a follow-up (`/sources`) may come the moment the answer is shown.
        let turn = Turn { question: question.to_string(), answer: outcome.text.clone() };
        self.memory.record(conversation, turn, shown).await;
        // A private chat's id is its person's: the record says only that it was private.
        let channel = if msg.private { "private" } else { msg.channel.as_str() };
        let given = Given { id, bot: &msg.bot, platform: labels.platform, channel, question, asker: &msg.author.id };
        self.keep_answer(&given, place, &outcome).await;
        Ok(())
    }
}

/// The last line of an answer that was delivered.
fn log_answered(outcome: &Outcome) {
    tracing::info!(
        abstained = outcome.abstained,
        generated_tokens = outcome.generated_tokens,
        first_token_ms = outcome.first_token.map(|t| t.as_millis() as u64),
        total_ms = outcome.total_time.as_millis() as u64,
        "answered"
    );
}

/// An answer's reply sink that holds its place in line until the final text (or a message
/// in place of it) is handed over: generation is over then, and the delivery — with a
/// platform's retries through rate limits, minutes at worst — must not keep the next
/// question from its turn. The answer is still delivered once, by the same task.
struct TurnUntilFinal<'a> {
    sink: &'a mut dyn ReplySink,
    turn: Option<crate::question::line::Slot>,
}

#[async_trait]
impl ReplySink for TurnUntilFinal<'_> {
    async fn typing(&mut self) -> anyhow::Result<()> {
        self.sink.typing().await
    }

    async fn update(&mut self, text_so_far: &str) -> anyhow::Result<()> {
        self.sink.update(text_so_far).await
    }

    async fn finish(&mut self, text: &str, sources: &[lore_core::SourceRef]) -> anyhow::Result<()> {
        self.turn.take();
        self.sink.finish(text, sources).await
    }

    async fn say(&mut self, text: &str) -> anyhow::Result<()> {
        self.turn.take();
        self.sink.say(text).await
    }
}

/// What a chat user is told when answering failed: the reason when it is theirs to act
/// on (the line is full, the question is too long), else only an id to quote, which the
/// log line with the full cause carries too.
fn user_message(error: &anyhow::Error, id: &str) -> String {
    for cause in error.chain() {
        if let Some(e @ lore_core::GenerateError::QueueFull(_)) = cause.downcast_ref() {
            return format!("Sorry, I could not answer that: {e}");
        }
        if let Some(e @ crate::question::prompt::PromptError::QuestionTooLong { .. }) = cause.downcast_ref() {
            return format!("Sorry, I could not answer that: {e}");
        }
    }
    format!("Sorry, something went wrong while answering (error {id}). Please try again later.")
}

/// A short id that ties what a user saw to the log lines of their question.
fn question_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Twelve hex digits: short enough to quote, and (being also the answer's id, kept for
    // `feedback_days`) too many for two answers of a year to share one.
    let mut x = nanos ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(std::process::id()).rotate_left(40);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    format!("{:012x}", (x ^ (x >> 31)) & 0xFFFF_FFFF_FFFF)
}

/// The counters' channel label of a bot's default place.
const DEFAULT_CHANNEL: &str = "default";

/// How the counters label a question from the HTTP API to `bot`.
fn api_labels(bot: &str) -> Labels<'_> {
    Labels { bot, platform: API, channel: DEFAULT_CHANNEL }
}

impl<R> Bot<R> {
    /// The configured channel a message is answered in (its own, else its thread's
    /// parent), else [`DEFAULT_CHANNEL`].
    fn channel_label<'m>(&self, msg: &'m Incoming) -> &'m str {
        if self.channels.contains_key(&msg.channel) {
            return &msg.channel;
        }
        match msg.parent_channel.as_deref().filter(|p| self.channels.contains_key(*p)) {
            Some(parent) => parent,
            None => DEFAULT_CHANNEL,
        }
    }

    /// Whether the allow-list lets this author ask here (a thread counts as its channel).
    fn allows(&self, msg: &Incoming) -> bool {
        let a = &msg.author;
        self.allow.permits(&a.id, &a.roles, &msg.channel)
            || msg.parent_channel.as_ref().is_some_and(|p| self.allow.permits(&a.id, &a.roles, p))
    }

    /// Where a message is answered: its channel's settings, else (for a thread or forum
    /// post) its parent channel's, else the bot's.
    fn place(&self, msg: &Incoming) -> &Routed<R> {
        let parent = || msg.parent_channel.as_ref().and_then(|p| self.channels.get(p));
        self.channels.get(&msg.channel).or_else(parent).unwrap_or(&self.default)
    }
}

/// Who holds a place in line: a person of one bot (user ids are per platform).
fn asker(msg: &Incoming) -> String {
    format!("{}/{}", msg.bot, msg.author.id)
}

/// What a waiting question shows until its turn.
pub fn waiting_text(position: usize) -> String {
    format!("(waiting: {} in line)", ordinal(position))
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

fn help_text(bot: &str) -> String {
    let mut s = format!(
        "I am {bot}. Ask me a question and I will answer from my knowledge base, citing passages like [1]. \
         Tell me how I did with 👍 or 👎 under an answer.\n"
    );
    for (_, name, what) in Command::ALL {
        s.push_str(&format!("/{name}: {what}\n"));
    }
    s
}

#[cfg(test)]
mod tests;
