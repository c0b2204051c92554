//! What people think of the answers, kept to make the bot better: every answer a bot gives
//! (question, answer, the sources shown, confidence, model, knowledge base), the 👍/👎
//! people give them, and the gold cases admins make of them with `/correct`.
//!
//! Three records tables beside the knowledge bases (`lore_knowledge::Records`):
//! `feedback.answers` (keyed by the answer's id, which is its question's id),
//! `feedback.votes` (keyed by answer and person: one vote per person per answer, a second
//! click replaces it) and `feedback.gold` (keyed by the answer corrected, or the case's own
//! id when imported). A person is stored as a salted hash of their platform and id, never
//! the id; the salt is a secret file in the state folder, not beside the data, so a copy of
//! the data alone does not say who voted. Answers and votes older than `feedback_days` are
//! deleted (hourly); `/forget` deletes a person's votes and the answers to their questions.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use lore_core::Rating;
use lore_knowledge::records::Select;
use lore_knowledge::{KbStore, Record, Records};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How often old answers and votes are looked for, and the tables compacted.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// The longest reason a 👎 or correction keeps, in characters.
pub const MAX_COMMENT_CHARS: usize = 2000;

/// One answer as it was given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerRecord {
    /// The question's id (`question_id` in the log), in the vote buttons.
    pub id: String,
    pub bot: String,
    /// `discord`, `telegram`, `console`, `api`.
    pub platform: String,
    /// The channel or chat it was asked in (the API key's name for the API).
    pub channel: String,
    pub question: String,
    pub answer: String,
    pub sources: Vec<ShownSource>,
    pub abstained: bool,
    /// How sure the calibration was that the answer is right, when one judged it.
    pub confidence: Option<f64>,
    /// The generator that wrote it.
    pub model: String,
    /// The knowledge base it answered from, and that table's version then.
    pub kb: String,
    pub kb_version: Option<u64>,
    pub first_token_ms: Option<u64>,
    pub total_ms: u64,
    pub time_ms: i64,
}

/// A source shown under an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShownSource {
    pub number: usize,
    pub source: String,
    pub location: String,
}

/// One person's vote on one answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vote {
    pub answer_id: String,
    pub rating: Rating,
    /// Why, when they said.
    pub comment: Option<String>,
    pub time_ms: i64,
    /// The answer voted on, as it was given (absent when it was not recorded: too old, or
    /// given by a daemon without a data directory).
    pub answer: Option<AnswerRecord>,
    /// The salted hash of who voted.
    #[serde(skip)]
    pub person: String,
}

/// A question with its right answer, made by an admin from an answer or imported: one
/// line of a gold file (`lore eval --gold`, `lore calibrate --gold`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldCase {
    pub question: String,
    /// The right answer; `null` when the documents do not cover the question.
    pub answer: Option<String>,
    /// Where the answer is (a file name or address, matched as a suffix), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The lines of `source` (from 1) that answer it: a passage holds the answer only when
    /// it covers one of them. Empty: any passage of `source`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// A gold case as stored: the case, and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredGold {
    pub bot: String,
    pub question: String,
    pub answer: Option<String>,
    pub source: Option<String>,
    /// The answer it corrects, when made with `/correct` or on the quality page.
    pub answer_id: Option<String>,
    pub time_ms: i64,
    #[serde(skip)]
    pub key: String,
}

impl StoredGold {
    /// The case as a gold file's line.
    pub fn case(&self) -> GoldCase {
        GoldCase {
            question: self.question.clone(),
            answer: self.answer.clone(),
            source: self.source.clone(),
            lines: Vec::new(),
            id: Some(self.key.clone()),
        }
    }
}

/// What `/correct`'s text says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correction {
    /// `None` for `/correct none`: the documents do not cover the question.
    pub answer: Option<String>,
    pub source: Option<String>,
}

impl Correction {
    /// Reads `THE RIGHT ANSWER`, `none`, or either followed by `source: FILE`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (answer, source) = match find_ascii_case_insensitive(text, "source:") {
            Some(at) => (text[..at].trim(), Some(text[at + "source:".len()..].trim().to_string())),
            None => (text, None),
        };
        if answer.is_empty() {
            return Err("write the right answer after /correct (or `/correct none` when the documents do not cover the question), optionally followed by `source: FILE`".into());
        }
        if answer.chars().count() > MAX_COMMENT_CHARS {
            return Err(format!("a correction is at most {MAX_COMMENT_CHARS} characters"));
        }
        let none = answer.eq_ignore_ascii_case("none");
        Ok(Self { answer: (!none).then(|| answer.to_string()), source: source.filter(|s| !s.is_empty()) })
    }
}

fn find_ascii_case_insensitive(text: &str, needle: &str) -> Option<usize> {
    text.to_ascii_lowercase().rfind(needle)
}

/// Why a vote or a correction was not stored.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    #[error("this bot keeps no answers or votes (it runs without the feedback store)")]
    NotKept,
    #[error("there is no answer {0:?} to correct (answers are kept for feedback_days)")]
    UnknownAnswer(String),
    #[error("answer {answer:?} is not one of bot {bot:?}'s")]
    OtherBot { answer: String, bot: String },
    #[error("{0}")]
    BadCorrection(String),
    #[error(transparent)]
    Store(#[from] lore_knowledge::StoreError),
    /// A record that could not be read or written as JSON.
    #[error(transparent)]
    Record(#[from] anyhow::Error),
}

/// The feedback store of one data directory.
pub struct Feedback {
    answers: Records,
    votes: Records,
    gold: Records,
    salt: String,
    keep: Duration,
    last_sweep: Mutex<Option<Instant>>,
    /// One vote at a time, read and written together: a 👎 and its reason (Discord sends
    /// them as two clicks at once) must not overwrite each other.
    voting: tokio::sync::Mutex<()>,
}

impl Feedback {
    /// The feedback tables in `store`, people hashed with the salt in `salt_file` (made on
    /// first use), answers and votes kept for `keep`.
    pub fn open(store: &KbStore, salt_file: &Path, keep: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            answers: store.records("feedback.answers"),
            votes: store.records("feedback.votes"),
            gold: store.records("feedback.gold"),
            salt: read_or_make_salt(salt_file)?,
            keep,
            last_sweep: Mutex::new(None),
            voting: tokio::sync::Mutex::new(()),
        })
    }

    /// Who a person is in the store: a salted hash of their platform and id.
    pub fn person(&self, platform: &str, user_id: &str) -> String {
        let digest = Sha256::new()
            .chain_update(self.salt.as_bytes())
            .chain_update(b"\0")
            .chain_update(platform.as_bytes())
            .chain_update(b"\0")
            .chain_update(user_id.as_bytes())
            .finalize();
        digest[..12].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Keeps an answer; `asker` is the hashed person who asked.
    pub async fn record_answer(&self, answer: &AnswerRecord, asker: &str) -> anyhow::Result<()> {
        let record = Record {
            key: answer.id.clone(),
            bot: answer.bot.clone(),
            person: asker.to_string(),
            time_ms: answer.time_ms,
            body: serde_json::to_string(answer)?,
        };
        self.answers.put(&[record]).await?;
        self.sweep_if_due().await;
        Ok(())
    }

    /// The answer with this id, if it is kept.
    pub async fn answer(&self, id: &str) -> anyhow::Result<Option<AnswerRecord>> {
        let found = self.answers.get(&[id.to_string()]).await?;
        found.first().map(|r| parse(&r.body)).transpose()
    }

    /// Records `person`'s vote on answer `answer_id` of `bot`, replacing their earlier one
    /// (a reason given before is kept when this click gives none and agrees with it).
    pub async fn vote(
        &self,
        bot: &str,
        answer_id: &str,
        person: &str,
        rating: Rating,
        comment: Option<&str>,
    ) -> Result<Vote, FeedbackError> {
        let answer = self.answer(answer_id).await?;
        if let Some(a) = answer.as_ref().filter(|a| a.bot != bot) {
            return Err(FeedbackError::OtherBot { answer: a.id.clone(), bot: bot.into() });
        }
        let key = vote_key(answer_id, person);
        let _one_at_a_time = self.voting.lock().await;
        let earlier = self.votes.get(std::slice::from_ref(&key)).await?;
        let earlier: Option<Vote> = earlier.first().and_then(|r| parse(&r.body).ok());
        let comment =
            comment.map(|c| c.trim().chars().take(MAX_COMMENT_CHARS).collect::<String>()).filter(|c| !c.is_empty());
        let comment = comment.or_else(|| earlier.filter(|e| e.rating == rating).and_then(|e| e.comment));
        let vote =
            Vote { answer_id: answer_id.into(), rating, comment, time_ms: now_ms(), answer, person: person.into() };
        let record = Record {
            key,
            bot: bot.into(),
            person: person.into(),
            time_ms: vote.time_ms,
            body: serde_json::to_string(&vote).map_err(anyhow::Error::from)?,
        };
        self.votes.put(&[record]).await?;
        Ok(vote)
    }

    /// The votes on `bot`'s answers since `since_ms`, oldest first.
    pub async fn votes(&self, bot: Option<&str>, since_ms: Option<i64>) -> anyhow::Result<Vec<Vote>> {
        let records = self.votes.list(&Select { bot, since_ms, ..Select::default() }).await?;
        records.iter().map(|r| parse::<Vote>(&r.body).map(|v| Vote { person: r.person.clone(), ..v })).collect()
    }

    /// The answers `bot` gave since `since_ms`, oldest first.
    pub async fn answers(&self, bot: Option<&str>, since_ms: Option<i64>) -> anyhow::Result<Vec<AnswerRecord>> {
        let records = self.answers.list(&Select { bot, since_ms, ..Select::default() }).await?;
        records.iter().map(|r| parse(&r.body)).collect()
    }

    /// Makes a gold case of answer `answer_id` of `bot`: its question with `correction`'s
    /// answer. A second correction of the same answer replaces the first.
    pub async fn correct(
        &self,
        bot: &str,
        answer_id: &str,
        correction: &Correction,
    ) -> Result<StoredGold, FeedbackError> {
        let answer = self.answer(answer_id).await?.ok_or_else(|| FeedbackError::UnknownAnswer(answer_id.into()))?;
        if answer.bot != bot {
            return Err(FeedbackError::OtherBot { answer: answer_id.into(), bot: bot.into() });
        }
        let gold = StoredGold {
            bot: bot.into(),
            question: answer.question,
            answer: correction.answer.clone(),
            source: correction.source.clone(),
            answer_id: Some(answer_id.into()),
            time_ms: now_ms(),
            key: answer_id.into(),
        };
        self.put_gold(std::slice::from_ref(&gold)).await?;
        Ok(gold)
    }

    /// Stores gold cases (replacing those with the same keys).
    pub async fn put_gold(&self, cases: &[StoredGold]) -> Result<(), FeedbackError> {
        let mut records = Vec::with_capacity(cases.len());
        for g in cases {
            let body = serde_json::to_string(g).map_err(anyhow::Error::from)?;
            records.push(Record {
                key: g.key.clone(),
                bot: g.bot.clone(),
                person: String::new(),
                time_ms: g.time_ms,
                body,
            });
        }
        Ok(self.gold.put(&records).await?)
    }

    /// `bot`'s gold cases made since `since_ms`, oldest first.
    pub async fn gold(&self, bot: Option<&str>, since_ms: Option<i64>) -> anyhow::Result<Vec<StoredGold>> {
        let records = self.gold.list(&Select { bot, since_ms, ..Select::default() }).await?;
        records.iter().map(|r| parse::<StoredGold>(&r.body).map(|g| StoredGold { key: r.key.clone(), ..g })).collect()
    }

    /// Deletes `person`'s votes and the answers to their questions; returns how many of
    /// each went.
    pub async fn forget(&self, person: &str) -> anyhow::Result<(usize, usize)> {
        let theirs = Select { person: Some(person), ..Select::default() };
        Ok((self.votes.delete(&theirs).await?, self.answers.delete(&theirs).await?))
    }

    /// At most hourly: deletes answers and votes older than `feedback_days` and compacts the
    /// tables. Failures are logged: they cost only space.
    async fn sweep_if_due(&self) {
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < SWEEP_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        if let Err(error) = self.sweep().await {
            tracing::warn!(error = format!("{error:#}"), "deleting old feedback failed");
        }
    }

    /// Deletes answers and votes older than `feedback_days`, and compacts the tables.
    pub async fn sweep(&self) -> anyhow::Result<usize> {
        let cutoff = now_ms().saturating_sub(i64::try_from(self.keep.as_millis()).unwrap_or(i64::MAX));
        let old = Select { before_ms: Some(cutoff), ..Select::default() };
        let deleted = self.answers.delete(&old).await? + self.votes.delete(&old).await?;
        for table in [&self.answers, &self.votes, &self.gold] {
            table.compact().await?;
        }
        if deleted > 0 {
            tracing::info!(deleted, "deleted answers and votes older than feedback_days");
        }
        Ok(deleted)
    }
}

fn vote_key(answer_id: &str, person: &str) -> String {
    format!("{answer_id}/{person}")
}

fn parse<T: serde::de::DeserializeOwned>(body: &str) -> anyhow::Result<T> {
    serde_json::from_str(body).context("a stored feedback record is not what this version of lore writes")
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The salt in `file`, made (random, owner-only) when there is none yet.
fn read_or_make_salt(file: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(file) {
        Ok(salt) if salt.trim().len() >= 32 => return Ok(salt.trim().to_string()),
        Ok(_) => anyhow::bail!("{} is too short to be a salt: delete it to make a new one (votes already stored then count as other people's)", file.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    }
    let mut random = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut random)
        .context("cannot read /dev/urandom for the feedback salt")?;
    let salt: String = random.iter().map(|b| format!("{b:02x}")).collect();
    crate::question::memory::write_atomically(file, salt.as_bytes())
        .with_context(|| format!("cannot write the feedback salt {}", file.display()))?;
    Ok(salt)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn feedback(dir: &Path) -> Feedback {
        let store = KbStore::open(&dir.join("data")).await.unwrap();
        Feedback::open(&store, &dir.join("state/feedback.salt"), Duration::from_secs(365 * 86_400)).unwrap()
    }

    fn answer(id: &str, bot: &str) -> AnswerRecord {
        AnswerRecord {
            id: id.into(),
            bot: bot.into(),
            platform: "telegram".into(),
            channel: "42".into(),
            question: "Where do bees sleep?".into(),
            answer: "In the hive.".into(),
            sources: vec![ShownSource { number: 1, source: "bees.md".into(), location: "lines 1-4".into() }],
            abstained: false,
            confidence: Some(0.7),
            model: "qwen".into(),
            kb: "docs".into(),
            kb_version: Some(3),
            first_token_ms: Some(120),
            total_ms: 900,
            time_ms: now_ms(),
        }
    }

    #[test]
    fn a_correction_reads_its_answer_none_and_a_source() {
        let c = |t: &str| Correction::parse(t);
        assert_eq!(c("Paris").unwrap(), Correction { answer: Some("Paris".into()), source: None });
        assert_eq!(c(" none ").unwrap(), Correction { answer: None, source: None });
        assert_eq!(c("Paris Source: europe.md").unwrap().source.as_deref(), Some("europe.md"));
        assert_eq!(c("Paris source: europe.md").unwrap().answer.as_deref(), Some("Paris"));
        assert!(c("  ").unwrap_err().contains("/correct none"));
        assert!(c("source: x.md").is_err(), "a source alone is no answer");
    }

    #[tokio::test]
    async fn votes_are_one_per_person_and_answer_corrections_become_gold_and_forget_deletes_a_persons_records() {
        let dir = tempfile::tempdir().unwrap();
        let f = feedback(dir.path()).await;
        let (ann, bob) = (f.person("telegram", "1"), f.person("telegram", "2"));
        assert_ne!(ann, bob);
        assert_ne!(ann, f.person("discord", "1"), "the same number on another platform is someone else");
        assert!(!ann.contains('1') || ann.len() == 24, "a hash, not the id");
        f.record_answer(&answer("a1", "docs"), &ann).await.unwrap();

        f.vote("docs", "a1", &bob, Rating::Down, Some("wrong hive")).await.unwrap();
        f.vote("docs", "a1", &bob, Rating::Down, None).await.unwrap();
        f.vote("docs", "a1", &ann, Rating::Up, None).await.unwrap();
        let votes = f.votes(Some("docs"), None).await.unwrap();
        assert_eq!(votes.len(), 2, "a second click replaces the first");
        let bobs = votes.iter().find(|v| v.person == bob).unwrap();
        assert_eq!((bobs.rating, bobs.comment.as_deref()), (Rating::Down, Some("wrong hive")), "the reason stays");
        assert_eq!(bobs.answer.as_ref().unwrap().question, "Where do bees sleep?", "a vote records its answer");
        assert!(matches!(f.vote("help", "a1", &bob, Rating::Up, None).await, Err(FeedbackError::OtherBot { .. })));

        let correction = Correction::parse("In the honeycomb cells source: bees.md").unwrap();
        let gold = f.correct("docs", "a1", &correction).await.unwrap();
        assert_eq!(
            gold.case(),
            GoldCase {
                question: "Where do bees sleep?".into(),
                answer: Some("In the honeycomb cells".into()),
                source: Some("bees.md".into()),
                lines: vec![],
                id: Some("a1".into()),
            }
        );
        f.correct("docs", "a1", &Correction::parse("none").unwrap()).await.unwrap();
        let cases = f.gold(Some("docs"), None).await.unwrap();
        assert_eq!(cases.len(), 1, "correcting again replaces the case");
        assert_eq!(cases[0].answer, None);
        assert!(matches!(f.correct("docs", "nope", &correction).await, Err(FeedbackError::UnknownAnswer(_))));

        assert_eq!(f.forget(&bob).await.unwrap(), (1, 0));
        assert_eq!(f.forget(&ann).await.unwrap(), (1, 1), "ann's vote and the answer to her question");
        assert!(f.answers(None, None).await.unwrap().is_empty());
        assert_eq!(f.gold(None, None).await.unwrap().len(), 1, "gold cases are not a person's");

        let again = feedback(dir.path()).await;
        assert_eq!(again.person("telegram", "1"), ann, "the salt is kept");
    }

    #[tokio::test]
    async fn answers_and_votes_older_than_feedback_days_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = feedback(dir.path()).await;
        f.keep = Duration::from_secs(86_400);
        let old = AnswerRecord { time_ms: now_ms() - 2 * 86_400_000, ..answer("old", "docs") };
        // The first write sweeps (with nothing old yet); the next sweep is due in an hour.
        f.record_answer(&answer("new", "docs"), "p").await.unwrap();
        f.record_answer(&old, "p").await.unwrap();
        assert_eq!(f.answers(None, None).await.unwrap().len(), 2);
        assert_eq!(f.sweep().await.unwrap(), 1);
        let left: Vec<String> = f.answers(None, None).await.unwrap().into_iter().map(|a| a.id).collect();
        assert_eq!(left, ["new"]);
    }
}
