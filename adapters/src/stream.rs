//! One answer streamed into a chat, whatever the platform. The platform supplies a few calls
//! and its text conventions ([`Platform`]); [`StreamingReply`] decides what to send and when.
//!
//! Streaming is best effort, the final answer is not. An intermediate edit is tried once:
//! when it fails the next one shows newer text anyway (a 429 also slows that place's edits
//! down). The final text is retried with backoff, honouring the platform's `retry_after`,
//! until it is shown exactly once: in the streamed message when that can still be edited,
//! else in a new message, the stale partial then deleted. The final answer's last message
//! carries the 👍/👎 buttons of its answer id (sent with that message, not after it), so
//! they survive splitting and cost no request of their own.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tracing::warn;

use crate::bidi::{isolate_ltr_runs, isolate_rtl_spans};
use crate::throttle::EditThrottle;
use crate::{ReplySink, SourceRef};

/// How often a call that must go through is retried before the answer is given up.
const MAX_RETRIES: u32 = 8;
/// First wait after a failure that did not say how long to wait; it doubles each time...
const FIRST_BACKOFF: Duration = Duration::from_millis(if cfg!(test) { 10 } else { 1_000 });
/// ...up to this: with [`MAX_RETRIES`], a platform may be down for about two minutes.
const LONGEST_BACKOFF: Duration = Duration::from_millis(if cfg!(test) { 300 } else { 30_000 });
/// The longest wait a platform's `retry_after` is honoured for: a larger one is this.
pub(crate) const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// A platform's `retry_after` in seconds as a wait, at most [`LONGEST_RETRY_AFTER`]; `None`
/// (wait as for any failure) for what is no wait at all: negative, NaN, infinite.
pub(crate) fn retry_after_secs(seconds: f64) -> Option<Duration> {
    (seconds.is_finite() && seconds >= 0.0)
        .then(|| Duration::from_secs_f64(seconds.min(LONGEST_RETRY_AFTER.as_secs_f64())))
}

/// What a failed platform call means for the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Too many requests: the call may go again, after `retry_after` when the platform said.
    RateLimited { retry_after: Option<Duration> },
    /// The edit would leave the message as it is: as good as done.
    NotModified,
    /// The platform or the network failed this time (a 5xx, a timeout, a dropped
    /// connection): the same call may well work a moment later.
    Transient,
    /// The call cannot work as made (the message was deleted, a permission is missing).
    Permanent,
}

/// Names one message to send, the same for every retry of it: a platform that can
/// de-duplicate (Discord's `nonce`) uses it, so that a retry after a lost response does not
/// post the message twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PostKey(pub u64);

impl PostKey {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // Unique within this process by the counter, and across restarts by the clock.
        let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Self((clock as u64).wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)))
    }
}

/// One platform, as far as streaming an answer into one place needs it.
#[async_trait]
pub(crate) trait Platform: Send + Sync {
    /// A message this platform sent, to edit later.
    type MessageId: Copy + Send + Sync;
    type Error: std::error::Error + Send + Sync + 'static;

    /// Longest message, in the units of [`Platform::measure`].
    const LIMIT: usize;

    /// `text` as ready-to-send messages (escaped or rendered), each within [`Platform::LIMIT`];
    /// at least one, and code blocks never left open.
    fn pieces(text: &str) -> Vec<String>;
    /// Length of a ready-to-send message as the platform counts it against the limit.
    fn measure(message: &str) -> usize;
    /// Ready-to-send line above the sources.
    fn sources_heading() -> String;
    /// Ready-to-send line naming one source.
    fn source_line(source: &SourceRef) -> String;
    fn classify(error: &Self::Error) -> Failure;

    /// Where the edit schedule is kept: answers sharing a place share the platform's edit limit.
    fn place(&self) -> String;
    async fn send_typing(&self) -> Result<(), Self::Error>;
    /// Sends a new message. The `first` of an answer is the one that replies to the question
    /// (on Discord, for a slash command, the one that fills the deferred response). With
    /// `votes`, the message carries 👍/👎 buttons for that answer id
    /// (`lore_core::vote_button_data`).
    async fn post(
        &self,
        message: &str,
        first: bool,
        key: PostKey,
        votes: Option<&str>,
    ) -> Result<Self::MessageId, Self::Error>;
    /// Changes a sent message's text, and adds the 👍/👎 buttons of answer `votes`.
    async fn edit(&self, id: Self::MessageId, message: &str, votes: Option<&str>) -> Result<(), Self::Error>;
    async fn delete(&self, id: Self::MessageId) -> Result<(), Self::Error>;
}

/// Runs `call` until it goes through, while its failures are worth another try (rate
/// limits, transient failures): waiting what the platform asks, else a doubling backoff,
/// at most [`MAX_RETRIES`] times.
pub(crate) async fn with_retries<T, E, F, Fut>(classify: impl Fn(&E) -> Failure, mut call: F) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut retries = 0;
    loop {
        let error = match call().await {
            Err(error) => error,
            done => return done,
        };
        let wait = match classify(&error) {
            Failure::RateLimited { retry_after } => retry_after.unwrap_or(backoff),
            Failure::Transient => backoff,
            Failure::NotModified | Failure::Permanent => return Err(error),
        };
        if retries == MAX_RETRIES {
            return Err(error);
        }
        warn!(%error, retry_in_ms = wait.as_millis() as u64, "a platform call failed; retrying");
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(LONGEST_BACKOFF);
        retries += 1;
    }
}

/// The answer to one question on one platform: one message edited as the text grows, then the
/// final text in as many messages as it takes.
pub(crate) struct StreamingReply<P: Platform> {
    platform: P,
    throttle: EditThrottle,
    place: String,
    /// The message edited as the answer streams, once sent.
    streaming: Option<P::MessageId>,
    /// What it shows now: an edit that would change nothing costs a request for nothing.
    shown: String,
    /// Streamed messages that could not be edited any more: deleted once the answer is shown.
    stale: Vec<P::MessageId>,
    /// The key of the streamed message until it is posted: every try at posting it, and the
    /// final text when none got through, reuse it, so a post whose response was lost is
    /// found again (where the platform de-duplicates) instead of left behind.
    stream_key: PostKey,
    /// A try at posting the streamed message failed in a way that may have posted it.
    maybe_posted: bool,
    /// Only the first message of an answer replies to the question.
    posted_any: bool,
    /// The answer's id, for its vote buttons (see [`ReplySink::answer_id`]).
    answer_id: Option<String>,
}

impl<P: Platform> StreamingReply<P> {
    pub(crate) fn new(platform: P, throttle: EditThrottle) -> Self {
        let place = platform.place();
        Self {
            platform,
            throttle,
            place,
            streaming: None,
            shown: String::new(),
            stale: Vec::new(),
            stream_key: PostKey::new(),
            maybe_posted: false,
            posted_any: false,
            answer_id: None,
        }
    }

    /// Posts a message that must arrive.
    async fn post(&mut self, message: &str, key: PostKey, votes: Option<&str>) -> Result<P::MessageId, P::Error> {
        let (platform, first) = (&self.platform, !self.posted_any);
        let id = with_retries(P::classify, || platform.post(message, first, key, votes)).await?;
        self.posted_any = true;
        Ok(id)
    }

    /// Edits message `id` to show `message`, retrying as [`with_retries`] does; an edit that
    /// would change nothing counts as done.
    async fn edit(&self, id: P::MessageId, message: &str, votes: Option<&str>) -> Result<(), P::Error> {
        let platform = &self.platform;
        match with_retries(P::classify, || platform.edit(id, message, votes)).await {
            Err(error) if P::classify(&error) == Failure::NotModified => Ok(()),
            result => result,
        }
    }

    /// One try at showing the answer so far; failures are only logged, newer text follows.
    async fn stream(&mut self, message: &str) {
        let outcome = match self.streaming {
            None => self.platform.post(message, !self.posted_any, self.stream_key, None).await.map(|id| {
                self.posted_any = true;
                self.streaming = Some(id);
            }),
            Some(id) => self.platform.edit(id, message, None).await,
        };
        let failure = match &outcome {
            Ok(()) => None,
            Err(error) => Some(P::classify(error)),
        };
        match (failure, self.streaming) {
            (None | Some(Failure::NotModified), _) => {
                // A post after one that may have got through may have been handed back the
                // earlier message, with older text: the next edit must go out.
                self.shown = if std::mem::take(&mut self.maybe_posted) { String::new() } else { message.to_string() };
                self.throttle.went_through(&self.place);
            }
            (Some(Failure::RateLimited { retry_after }), _) => self.throttle.slow_down(&self.place, retry_after),
            (Some(Failure::Transient), None) => self.maybe_posted = true,
            (Some(Failure::Permanent), Some(id)) => {
                // Deleted by a moderator, say: the next update starts a new message.
                self.abandon(id);
            }
            (Some(_), _) => {}
        }
        if let Err(error) = outcome {
            warn!(%error, "streaming the answer failed; the next update or the final text follows");
        }
    }

    /// Stops editing message `id`: it is deleted once the answer is shown elsewhere.
    fn abandon(&mut self, id: P::MessageId) {
        self.stale.push(id);
        self.streaming = None;
        self.shown.clear();
        self.stream_key = PostKey::new();
        self.maybe_posted = false;
    }

    /// Shows the final text's first piece: in the streamed message when it can be edited
    /// (the edit waits for its slot: it must not be dropped by the throttle), else anew.
    /// With `votes` (it is the last piece), the message gets its buttons even when its text
    /// is already shown.
    async fn show_final(&mut self, message: &str, votes: Option<&str>) -> Result<(), P::Error> {
        if let Some(id) = self.streaming.filter(|_| message != self.shown || votes.is_some()) {
            self.throttle.acquire(&self.place).await;
            match self.edit(id, message, votes).await {
                Err(error) if P::classify(&error) == Failure::Permanent => {
                    warn!(%error, "the streamed answer cannot be edited; sending it anew");
                    self.abandon(id);
                }
                done => return done,
            }
        }
        if self.streaming.is_none() {
            let id = self.post(message, self.stream_key, votes).await?;
            if self.maybe_posted {
                // The platform may have handed back the streamed message posted earlier,
                // which shows older text.
                self.edit(id, message, votes).await?;
            }
            self.streaming = Some(id);
            self.shown = message.to_string();
        }
        Ok(())
    }

    /// Deletes the messages left behind by [`StreamingReply::abandon`], as far as the
    /// platform lets us (a message already deleted is fine).
    async fn delete_stale(&mut self) {
        for id in std::mem::take(&mut self.stale) {
            let platform = &self.platform;
            if let Err(error) = with_retries(P::classify, || platform.delete(id)).await {
                warn!(%error, "deleting a stale part of an answer failed");
            }
        }
    }
}

/// `text` as the platform's messages, right-to-left lines given their isolates first: on
/// plain text (escaping comes after, so no isolate lands in an escape, entity or tag), before
/// splitting (isolates count against the limit), and alike for streamed edits and the final
/// text: a line's isolates depend on that line alone, so the final edit does not reshuffle
/// what was streamed.
fn pieces<P: Platform>(text: &str) -> Vec<String> {
    P::pieces(&isolate_ltr_runs(text))
}

/// The final answer as messages: the text split at the limit, then the sources.
fn final_pieces<P: Platform>(text: &str, sources: &[SourceRef]) -> Vec<String> {
    let mut pieces = pieces::<P>(text.trim_end());
    place_sources::<P>(&mut pieces, sources);
    // Platforms refuse empty messages.
    pieces.retain(|piece| !piece.trim().is_empty());
    pieces
}

/// Puts the sources in the answer's last message when they fit, since readers look for them
/// right under the text; else in messages of their own, kept whole where they fit in one.
fn place_sources<P: Platform>(pieces: &mut Vec<String>, sources: &[SourceRef]) {
    if sources.is_empty() {
        return;
    }
    let block = sources_block::<P>(sources);
    match pieces.last_mut() {
        Some(last) if !last.trim().is_empty() && fits::<P>(last, &block) => last.push_str(&block),
        _ => pieces.extend(pack_lines::<P>(&source_lines::<P>(sources))),
    }
}

/// The sources as they follow the answer's text, after a blank line.
pub(crate) fn sources_block<P: Platform>(sources: &[SourceRef]) -> String {
    format!("\n\n{}", source_lines::<P>(sources).join("\n"))
}

fn source_lines<P: Platform>(sources: &[SourceRef]) -> Vec<String> {
    std::iter::once(P::sources_heading()).chain(sources.iter().map(|s| P::source_line(&isolated(s)))).collect()
}

/// A source whose file name or heading is right-to-left, those parts isolated: the line then
/// reads in the order of its fields (number, file, heading, lines) whatever their script.
fn isolated(source: &SourceRef) -> SourceRef {
    SourceRef {
        source: isolate_rtl_spans(&source.source).into_owned(),
        location: isolate_rtl_spans(&source.location).into_owned(),
        ..source.clone()
    }
}

fn fits<P: Platform>(message: &str, addition: &str) -> bool {
    P::measure(message) + P::measure(addition) <= P::LIMIT
}

/// Joins `lines` into as few messages as the limit allows, never cutting a line.
fn pack_lines<P: Platform>(lines: &[String]) -> Vec<String> {
    let mut messages: Vec<String> = Vec::new();
    for line in lines {
        match messages.last_mut() {
            Some(message) if fits::<P>(message, &format!("\n{line}")) => {
                message.push('\n');
                message.push_str(line);
            }
            _ => messages.push(line.clone()),
        }
    }
    messages
}

#[async_trait]
impl<P: Platform> ReplySink for StreamingReply<P> {
    async fn typing(&mut self) -> anyhow::Result<()> {
        if let Err(error) = self.platform.send_typing().await {
            // Only a courtesy: the answer comes all the same.
            warn!(%error, "showing that an answer is coming failed");
        }
        Ok(())
    }

    async fn update(&mut self, text_so_far: &str) -> anyhow::Result<()> {
        if text_so_far.trim().is_empty() || !self.throttle.try_acquire(&self.place) {
            return Ok(());
        }
        let Some(first) = pieces::<P>(text_so_far).into_iter().next() else { return Ok(()) };
        if first != self.shown {
            self.stream(&first).await;
        }
        Ok(())
    }

    async fn finish(&mut self, text: &str, sources: &[SourceRef]) -> anyhow::Result<()> {
        let pieces = final_pieces::<P>(text, sources);
        let last = pieces.len().saturating_sub(1);
        let answer_id = self.answer_id.clone();
        let votes = |i: usize| answer_id.as_deref().filter(|_| i == last);
        for (i, piece) in pieces.iter().enumerate() {
            if i == 0 {
                self.show_final(piece, votes(i)).await?;
            } else {
                self.post(piece, PostKey::new(), votes(i)).await?;
            }
        }
        self.delete_stale().await;
        Ok(())
    }

    /// Replaces whatever was streamed so far: an answer cut short (an error, a restart)
    /// leaves no partial behind. Not an answer: no vote buttons.
    async fn say(&mut self, text: &str) -> anyhow::Result<()> {
        self.answer_id = None;
        self.finish(text, &[]).await
    }

    fn answer_id(&mut self, id: &str) {
        self.answer_id = Some(id.to_string());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use tokio::time::Instant;

    use super::*;
    use crate::text::split_message;
    use crate::throttle::EditThrottle;

    const LIMIT: usize = 40;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Op {
        Typing,
        Post,
        Edit,
        Delete,
    }

    /// One call the core made, failed or not.
    #[derive(Debug, Clone, PartialEq)]
    struct Call {
        op: Op,
        /// The message's id for edits; for posts the id it got.
        id: usize,
        text: String,
        first: bool,
        failed: bool,
    }

    #[derive(Default)]
    struct Log {
        calls: Vec<(Call, Instant)>,
        /// Failures to give, in order, to the next calls of their kind.
        failures: VecDeque<(Op, Failure)>,
        posted: usize,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("fake {0:?}")]
    struct FakeError(Failure);

    /// Counts in characters, like Discord, with a small limit so that tests split easily.
    #[derive(Clone, Default)]
    struct FakeChat(Arc<Mutex<Log>>);

    impl FakeChat {
        fn failing(self, op: Op, failure: Failure, times: usize) -> Self {
            self.log().failures.extend(std::iter::repeat_n((op, failure), times));
            self
        }

        fn log(&self) -> std::sync::MutexGuard<'_, Log> {
            self.0.lock().unwrap()
        }

        fn calls(&self) -> Vec<Call> {
            self.log().calls.iter().map(|(call, _)| call.clone()).collect()
        }

        fn times(&self) -> Vec<Instant> {
            self.log().calls.iter().map(|(_, at)| *at).collect()
        }

        /// The messages as the chat shows them, in order.
        fn shown(&self) -> Vec<String> {
            let mut shown: Vec<String> = Vec::new();
            for call in self.calls().into_iter().filter(|call| !call.failed) {
                match call.op {
                    Op::Post => shown.push(call.text),
                    Op::Edit => shown[call.id].clone_from(&call.text),
                    Op::Delete => shown[call.id].clear(),
                    Op::Typing => {}
                }
            }
            shown.retain(|message| !message.is_empty());
            shown
        }

        fn record(&self, op: Op, id: Option<usize>, text: &str, first: bool) -> Result<usize, FakeError> {
            let mut log = self.log();
            let failure = log.failures.iter().position(|(o, _)| *o == op).and_then(|i| log.failures.remove(i));
            let id = match (id, failure) {
                (Some(id), _) => id,
                (None, Some(_)) => usize::MAX,
                (None, None) => {
                    log.posted += 1;
                    log.posted - 1
                }
            };
            let call = Call { op, id, text: text.to_string(), first, failed: failure.is_some() };
            log.calls.push((call, Instant::now()));
            match failure {
                Some((_, failure)) => Err(FakeError(failure)),
                None => Ok(id),
            }
        }
    }

    #[async_trait]
    impl Platform for FakeChat {
        type MessageId = usize;
        type Error = FakeError;
        const LIMIT: usize = LIMIT;

        fn pieces(text: &str) -> Vec<String> {
            split_message(text, LIMIT)
        }

        fn measure(message: &str) -> usize {
            message.chars().count()
        }

        fn sources_heading() -> String {
            "Sources".into()
        }

        fn source_line(source: &SourceRef) -> String {
            format!("[{}] {}", source.number, source.source)
        }

        fn classify(error: &FakeError) -> Failure {
            error.0
        }

        fn place(&self) -> String {
            "chat".into()
        }

        async fn send_typing(&self) -> Result<(), FakeError> {
            self.record(Op::Typing, None, "", false).map(drop)
        }

        async fn post(&self, message: &str, first: bool, _: PostKey, votes: Option<&str>) -> Result<usize, FakeError> {
            self.record(Op::Post, None, &with_votes(message, votes), first)
        }

        async fn edit(&self, id: usize, message: &str, votes: Option<&str>) -> Result<(), FakeError> {
            self.record(Op::Edit, Some(id), &with_votes(message, votes), false).map(drop)
        }

        async fn delete(&self, id: usize) -> Result<(), FakeError> {
            self.record(Op::Delete, Some(id), "", false).map(drop)
        }
    }

    /// A message as the fake shows it: its buttons, when it has them, after its text.
    fn with_votes(message: &str, votes: Option<&str>) -> String {
        match votes {
            Some(id) => format!("{message} [👍👎 {id}]"),
            None => message.to_string(),
        }
    }

    #[tokio::test]
    async fn the_vote_buttons_go_on_the_last_message_of_a_final_answer_only() {
        let chat = FakeChat::default();
        let mut reply = reply_in(&chat, 0);
        reply.answer_id("a1");
        reply.update("Bees dance").await.unwrap();
        let long = "Bees dance to show the way. ".repeat(4);
        reply.finish(&long, &sources(1)).await.unwrap();
        let shown = chat.shown();
        assert!(shown.len() >= 3, "{shown:?}");
        let (last, earlier) = shown.split_last().unwrap();
        assert!(last.ends_with("[👍👎 a1]"), "{last}");
        assert!(earlier.iter().all(|m| !m.contains("👍")), "{shown:?}");

        // A final text the streamed message already shows still gets its buttons.
        let chat = FakeChat::default();
        let mut reply = reply_in(&chat, 0);
        reply.answer_id("a2");
        reply.update("Bees dance.").await.unwrap();
        reply.finish("Bees dance.", &[]).await.unwrap();
        assert_eq!(chat.shown(), ["Bees dance. [👍👎 a2]"]);

        // What is said instead of an answer has none.
        let chat = FakeChat::default();
        let mut reply = reply_in(&chat, 0);
        reply.answer_id("a3");
        reply.update("Bees").await.unwrap();
        reply.say("Sorry, I am restarting.").await.unwrap();
        assert_eq!(chat.shown(), ["Sorry, I am restarting."]);
    }

    fn reply_in(chat: &FakeChat, interval_ms: u64) -> StreamingReply<FakeChat> {
        StreamingReply::new(chat.clone(), EditThrottle::new(Duration::from_millis(interval_ms)))
    }

    fn sources(count: usize) -> Vec<SourceRef> {
        (1..=count)
            .map(|number| SourceRef {
                number,
                source: format!("file{number}.md"),
                location: "lines 1-2".into(),
                id: String::new(),
            })
            .collect()
    }

    fn ops(chat: &FakeChat) -> Vec<(Op, bool)> {
        chat.calls().iter().map(|call| (call.op, call.failed)).collect()
    }

    #[tokio::test]
    async fn updates_are_throttled_into_edits_of_one_message() {
        let chat = FakeChat::default();
        let mut reply = reply_in(&chat, 100);
        for text in ["One", "One two", "One two three"] {
            reply.update(text).await.unwrap();
        }
        assert_eq!(chat.shown(), vec!["One"], "later updates wait for the interval");
        tokio::time::sleep(Duration::from_millis(120)).await;
        reply.update("One two three four").await.unwrap();
        reply.finish("One two three four five.", &[]).await.unwrap();

        assert_eq!(ops(&chat), vec![(Op::Post, false), (Op::Edit, false), (Op::Edit, false)]);
        assert_eq!(chat.shown(), vec!["One two three four five."]);
        let times = chat.times();
        assert!(times[2] - times[1] >= Duration::from_millis(100), "the final edit waits for its slot too");
    }

    #[tokio::test]
    async fn blank_text_and_edits_that_change_nothing_are_skipped() {
        let chat = FakeChat::default();
        let mut reply = reply_in(&chat, 0);
        reply.update("  \n").await.unwrap();
        reply.update("Same").await.unwrap();
        reply.update("Same  ").await.unwrap();
        reply.finish("Same\n", &[]).await.unwrap();
        assert_eq!(ops(&chat), vec![(Op::Post, false)]);
    }

    #[tokio::test]
    async fn not_modified_counts_as_shown() {
        let chat = FakeChat::default().failing(Op::Edit, Failure::NotModified, 1);
        let mut reply = reply_in(&chat, 0);
        reply.update("One").await.unwrap();
        reply.update("One two").await.unwrap();
        reply.finish("One two", &[]).await.unwrap();
        assert_eq!(ops(&chat), vec![(Op::Post, false), (Op::Edit, true)], "no new message, no second edit");
    }

    #[tokio::test]
    async fn a_message_that_cannot_be_edited_is_replaced_and_deleted_once_the_answer_is_shown() {
        let chat = FakeChat::default().failing(Op::Edit, Failure::Permanent, 1);
        let mut reply = reply_in(&chat, 0);
        reply.update("One").await.unwrap();
        reply.update("One two").await.unwrap();
        reply.update("One two three").await.unwrap();
        reply.finish("One two three four.", &[]).await.unwrap();

        let calls = chat.calls();
        assert_eq!(
            ops(&chat),
            vec![(Op::Post, false), (Op::Edit, true), (Op::Post, false), (Op::Edit, false), (Op::Delete, false)]
        );
        assert_eq!((calls[3].id, calls[3].text.as_str()), (1, "One two three four."));
        assert_eq!(calls[4].id, 0, "the stale partial goes");
        assert!(calls[0].first && !calls[2].first, "only the answer's first message replies");
        assert_eq!(chat.shown(), vec!["One two three four."]);
    }

    #[tokio::test]
    async fn a_streaming_edit_that_fails_for_now_is_not_retried_and_posts_nothing_new() {
        let chat = FakeChat::default().failing(Op::Edit, Failure::Transient, 1);
        let mut reply = reply_in(&chat, 0);
        reply.update("One").await.unwrap();
        reply.update("One two").await.unwrap();
        reply.finish("One two three.", &[]).await.unwrap();
        assert_eq!(ops(&chat), vec![(Op::Post, false), (Op::Edit, true), (Op::Edit, false)]);
        assert_eq!(chat.shown(), vec!["One two three."]);
    }

    #[tokio::test]
    async fn the_final_edit_is_retried_through_failures_and_rate_limits() {
        let retry_after = Some(Duration::from_millis(70));
        let chat = FakeChat::default().failing(Op::Edit, Failure::Transient, 2).failing(
            Op::Edit,
            Failure::RateLimited { retry_after },
            1,
        );
        let mut reply = reply_in(&chat, 0);
        reply.update("Half").await.unwrap();
        reply.finish("Half and whole.", &[]).await.unwrap();

        assert_eq!(chat.shown(), vec!["Half and whole."], "one message, no duplicate");
        let times = chat.times();
        assert_eq!(times.len(), 5);
        let waits: Vec<Duration> = times.windows(2).skip(1).map(|pair| pair[1] - pair[0]).collect();
        let expected = [FIRST_BACKOFF, FIRST_BACKOFF * 2, Duration::from_millis(70)];
        for (waited, expected) in waits.iter().zip(expected) {
            // Backoff for a transient failure, doubling; then the wait the platform asked for.
            assert!(*waited >= expected && *waited < expected + Duration::from_millis(50), "{waits:?}");
        }
    }

    #[tokio::test]
    async fn a_rate_limited_streaming_edit_slows_the_place_down() {
        let chat = FakeChat::default().failing(Op::Edit, Failure::RateLimited { retry_after: None }, 1);
        let mut reply = reply_in(&chat, 100);
        reply.update("One").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        reply.update("One two").await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        reply.update("One two three").await.unwrap();
        assert_eq!(ops(&chat), vec![(Op::Post, false), (Op::Edit, true)], "edits wait twice as long now");
        tokio::time::sleep(Duration::from_millis(60)).await;
        reply.update("One two three four").await.unwrap();
        assert_eq!(chat.shown(), vec!["One two three four"]);
    }

    #[tokio::test]
    async fn long_answer_is_split_and_sources_end_its_last_message() {
        let chat = FakeChat::default();
        let mut reply = reply_in(&chat, 0);
        let answer = "word ".repeat(15);
        reply.update(&answer).await.unwrap();
        reply.finish(&answer, &sources(1)).await.unwrap();

        let shown = chat.shown();
        assert!(shown.len() >= 3, "{shown:?}");
        assert!(shown.iter().all(|message| message.chars().count() <= LIMIT), "{shown:?}");
        assert_eq!(shown.concat().matches("word").count(), 15, "nothing lost or repeated");
        assert!(shown.last().unwrap().ends_with("word\n\nSources\n[1] file1.md"), "{shown:?}");
        assert_eq!(chat.calls().iter().filter(|call| call.first).count(), 1);
    }

    #[tokio::test]
    async fn sources_that_do_not_fit_get_a_message_of_their_own() {
        let chat = FakeChat::default();
        let mut reply = reply_in(&chat, 0);
        let answer = "x".repeat(LIMIT - 5);
        reply.finish(&answer, &sources(1)).await.unwrap();
        assert_eq!(chat.shown(), vec![answer, "Sources\n[1] file1.md".to_string()]);
    }

    #[tokio::test]
    async fn sources_longer_than_a_message_are_packed_whole_line_by_line() {
        let chat = FakeChat::default();
        let mut reply = reply_in(&chat, 0);
        reply.finish("Short answer.", &sources(5)).await.unwrap();
        assert_eq!(
            chat.shown(),
            vec!["Short answer.", "Sources\n[1] file1.md\n[2] file2.md", "[3] file3.md\n[4] file4.md\n[5] file5.md",]
        );
    }

    #[tokio::test]
    async fn sources_alone_when_the_text_is_empty() {
        let chat = FakeChat::default();
        let mut reply = reply_in(&chat, 0);
        reply.finish(" \n", &sources(1)).await.unwrap();
        assert_eq!(chat.shown(), vec!["Sources\n[1] file1.md"]);
    }

    #[tokio::test]
    async fn say_posts_every_piece_and_only_the_first_replies() {
        let chat = FakeChat::default();
        let mut reply = reply_in(&chat, 0);
        reply.say(&"word ".repeat(20)).await.unwrap();
        let firsts: Vec<bool> = chat.calls().iter().map(|call| call.first).collect();
        assert!(firsts.len() >= 3);
        assert!(firsts[0] && firsts[1..].iter().all(|first| !first));
    }

    #[tokio::test]
    async fn say_replaces_a_partial_answer() {
        let chat = FakeChat::default();
        let mut reply = reply_in(&chat, 0);
        reply.update("Half an").await.unwrap();
        reply.say("Sorry, something went wrong.").await.unwrap();
        assert_eq!(chat.shown(), vec!["Sorry, something went wrong."]);
    }

    #[tokio::test]
    async fn rate_limit_waits_as_long_as_the_platform_says() {
        let retry_after = Some(Duration::from_millis(50));
        let chat = FakeChat::default().failing(Op::Post, Failure::RateLimited { retry_after }, 1);
        let mut reply = reply_in(&chat, 0);
        reply.finish("Hi there.", &[]).await.unwrap();

        assert_eq!(ops(&chat), vec![(Op::Post, true), (Op::Post, false)]);
        assert!(chat.calls()[1].first, "a refused first message is still the first");
        let waited = chat.times()[1] - chat.times()[0];
        assert!(waited >= Duration::from_millis(50), "the platform's wait, not the backoff: {waited:?}");
        assert_eq!(chat.shown(), vec!["Hi there."]);
    }

    #[tokio::test]
    async fn delivery_is_given_up_after_the_last_retry() {
        let times = MAX_RETRIES as usize + 1;
        let chat = FakeChat::default().failing(Op::Post, Failure::Transient, times);
        let error = reply_in(&chat, 0).say("Hi.").await.unwrap_err();
        assert!(error.to_string().contains("Transient"), "{error}");
        assert_eq!(chat.calls().len(), times);
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let chat = FakeChat::default().failing(Op::Post, Failure::Permanent, 1);
        assert!(reply_in(&chat, 0).say("Hi.").await.is_err());
        assert_eq!(chat.calls().len(), 1);
    }

    #[tokio::test]
    async fn a_hebrew_answer_is_isolated_alike_streamed_and_final_and_so_are_its_sources() {
        let chat = FakeChat::default();
        let mut reply = reply_in(&chat, 0);
        let answer = "אימון mT5 עם C++";
        reply.update(answer).await.unwrap();
        let source =
            SourceRef { number: 1, source: "מדריך.md".into(), location: String::new(), id: String::new() };
        reply.finish(answer, &[source]).await.unwrap();

        let isolated = "אימון \u{2066}mT5\u{2069} עם \u{2066}C++\u{2069}";
        // The final text is what the stream showed: no edit, nothing moves.
        assert_eq!(ops(&chat), vec![(Op::Post, false), (Op::Post, false)]);
        // Isolates count against the limit: with them the sources no longer fit beside the text.
        assert_eq!(chat.shown(), [isolated, "Sources\n[1] \u{2068}מדריך\u{2069}.md"]);
    }

    #[tokio::test]
    async fn typing_and_streaming_failures_are_not_fatal() {
        let chat =
            FakeChat::default().failing(Op::Typing, Failure::Permanent, 1).failing(Op::Post, Failure::Permanent, 1);
        let mut reply = reply_in(&chat, 0);
        reply.typing().await.unwrap();
        reply.update("Half").await.unwrap();
        reply.finish("Half and whole.", &[]).await.unwrap();
        assert_eq!(chat.shown(), vec!["Half and whole."]);
    }
}
