//! What the quality page shows, computed from the kept answers, votes and gold cases: per
//! bot and channel, questions a day, answered and abstained, 👍 and 👎, time to the first
//! word; the knowledge gaps (questions abstained on or voted down, grouped by meaning);
//! and the review queue (voted-down answers no admin has corrected yet).
//!
//! A private chat's channel is kept as `private` (its id would be its person's), so no
//! row here names anyone.

use std::collections::{BTreeMap, HashMap, HashSet};

use lore_core::{cosine, Embedder, Rating};
use serde::Serialize;

use crate::calendar::day_of;
use crate::question::feedback::{AnswerRecord, StoredGold, Vote};

/// How alike (cosine of their embeddings) two questions must be to count as one gap.
/// Paraphrases of one question score above it with the small embedders Lore ships;
/// questions about different things of one topic mostly below.
pub const SAME_GAP: f32 = 0.75;

/// Questions read for the gaps at most (the newest), so the page stays quick.
const GAP_QUESTIONS: usize = 500;

/// Examples shown per gap.
const GAP_EXAMPLES: usize = 3;

/// Answers in the review queue at most (the newest).
const REVIEW_ANSWERS: usize = 100;

#[derive(Debug, Serialize, PartialEq)]
pub struct Report {
    /// The days covered, oldest first (`YYYY-MM-DD`, UTC).
    pub days: Vec<String>,
    /// One per bot and channel, most questions first.
    pub places: Vec<PlaceFigures>,
    /// Largest first.
    pub gaps: Vec<Gap>,
    /// Newest first.
    pub review: Vec<Review>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct PlaceFigures {
    pub bot: String,
    pub platform: String,
    pub channel: String,
    pub totals: Figures,
    /// One per day of [`Report::days`].
    pub per_day: Vec<Figures>,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Figures {
    pub questions: usize,
    pub answered: usize,
    pub abstained: usize,
    pub up: usize,
    pub down: usize,
    pub first_token_p50_ms: Option<u64>,
    pub first_token_p95_ms: Option<u64>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Gap {
    /// Questions in it.
    pub count: usize,
    pub bots: Vec<String>,
    pub examples: Vec<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Review {
    /// The answer's id: what a correction names.
    pub id: String,
    pub bot: String,
    pub channel: String,
    pub day: String,
    pub question: String,
    pub answer: String,
    pub sources: Vec<String>,
    pub downs: usize,
    /// What the people who voted it down said.
    pub comments: Vec<String>,
}

/// Everything but the gaps, over the `days` days up to `now_ms`, for the bots `may_see`
/// lets through.
pub fn report(
    answers: &[AnswerRecord],
    votes: &[Vote],
    gold: &[StoredGold],
    now_ms: i64,
    days: usize,
    may_see: impl Fn(&str) -> bool,
) -> Report {
    let days: Vec<String> = (0..days as i64).rev().map(|back| day_of(now_ms - back * 86_400_000)).collect();
    let answers: Vec<&AnswerRecord> = answers.iter().filter(|a| may_see(&a.bot)).collect();
    let by_id: HashMap<&str, &AnswerRecord> = answers.iter().map(|a| (a.id.as_str(), *a)).collect();
    // Each vote with its answer: as kept, else as the vote kept it.
    let votes: Vec<(&Vote, &AnswerRecord)> = votes
        .iter()
        .filter_map(|v| Some((v, by_id.get(v.answer_id.as_str()).copied().or(v.answer.as_ref())?)))
        .filter(|(_, a)| may_see(&a.bot))
        .collect();
    Report { places: places(&answers, &votes, &days), review: review(&votes, gold), days, gaps: Vec::new() }
}

/// Key of a place: bot, platform, channel.
type PlaceKey = (String, String, String);

fn place_of(a: &AnswerRecord) -> PlaceKey {
    (a.bot.clone(), a.platform.clone(), a.channel.clone())
}

fn places(answers: &[&AnswerRecord], votes: &[(&Vote, &AnswerRecord)], days: &[String]) -> Vec<PlaceFigures> {
    let day_index: HashMap<&str, usize> = days.iter().enumerate().map(|(i, d)| (d.as_str(), i)).collect();
    let mut tally: BTreeMap<PlaceKey, Tally> = BTreeMap::new();
    for a in answers {
        let Some(&day) = day_index.get(day_of(a.time_ms).as_str()) else { continue };
        let t = tally.entry(place_of(a)).or_insert_with(|| Tally::new(days.len()));
        t.answer(day, a);
    }
    for (vote, answer) in votes {
        let Some(&day) = day_index.get(day_of(answer.time_ms).as_str()) else { continue };
        let t = tally.entry(place_of(answer)).or_insert_with(|| Tally::new(days.len()));
        t.vote(day, vote.rating);
    }
    let mut places: Vec<PlaceFigures> = tally
        .into_iter()
        .map(|((bot, platform, channel), t)| PlaceFigures {
            bot,
            platform,
            channel,
            totals: t.totals(),
            per_day: t.per_day(),
        })
        .collect();
    places.sort_by_key(|p| std::cmp::Reverse(p.totals.questions));
    places
}

/// Counts of one place, per day, with the first-token times to take percentiles of.
struct Tally {
    days: Vec<(Figures, Vec<u64>)>,
}

impl Tally {
    fn new(days: usize) -> Self {
        Self { days: vec![(Figures::default(), Vec::new()); days] }
    }

    fn answer(&mut self, day: usize, a: &AnswerRecord) {
        let (f, times) = &mut self.days[day];
        f.questions += 1;
        if a.abstained {
            f.abstained += 1;
        } else {
            f.answered += 1;
        }
        times.extend(a.first_token_ms);
    }

    fn vote(&mut self, day: usize, rating: Rating) {
        let f = &mut self.days[day].0;
        match rating {
            Rating::Up => f.up += 1,
            Rating::Down => f.down += 1,
        }
    }

    fn per_day(&self) -> Vec<Figures> {
        self.days.iter().map(|(f, times)| with_percentiles(f.clone(), times.clone())).collect()
    }

    fn totals(&self) -> Figures {
        let mut total = Figures::default();
        let mut times = Vec::new();
        for (f, t) in &self.days {
            total.questions += f.questions;
            total.answered += f.answered;
            total.abstained += f.abstained;
            total.up += f.up;
            total.down += f.down;
            times.extend(t);
        }
        with_percentiles(total, times)
    }
}

fn with_percentiles(mut figures: Figures, mut times: Vec<u64>) -> Figures {
    times.sort_unstable();
    figures.first_token_p50_ms = percentile(&times, 0.50);
    figures.first_token_p95_ms = percentile(&times, 0.95);
    figures
}

/// The nearest-rank percentile of sorted `values`.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.max(1) - 1).copied()
}

/// Voted-down answers without a gold case made of them, newest first.
fn review(votes: &[(&Vote, &AnswerRecord)], gold: &[StoredGold]) -> Vec<Review> {
    let corrected: HashSet<&str> = gold.iter().filter_map(|g| g.answer_id.as_deref()).collect();
    let mut downs: BTreeMap<&str, (&AnswerRecord, usize, Vec<String>)> = BTreeMap::new();
    for &(vote, answer) in votes {
        if vote.rating != Rating::Down || corrected.contains(vote.answer_id.as_str()) {
            continue;
        }
        let entry = downs.entry(vote.answer_id.as_str()).or_insert((answer, 0, Vec::new()));
        entry.1 += 1;
        entry.2.extend(vote.comment.clone());
    }
    let mut queue: Vec<Review> = downs
        .into_values()
        .map(|(a, downs, comments)| Review {
            id: a.id.clone(),
            bot: a.bot.clone(),
            channel: a.channel.clone(),
            day: day_of(a.time_ms),
            question: a.question.clone(),
            answer: a.answer.clone(),
            sources: a.sources.iter().map(|s| format!("[{}] {} ({})", s.number, s.source, s.location)).collect(),
            downs,
            comments,
        })
        .collect();
    queue.sort_by(|a, b| b.day.cmp(&a.day).then(b.downs.cmp(&a.downs)));
    queue.truncate(REVIEW_ANSWERS);
    queue
}

/// The questions abstained on or voted down, grouped by meaning with `embedder`: each
/// question joins the first group whose mean is at least [`SAME_GAP`] alike, else starts
/// its own. Largest first; ties, the most recent first.
pub async fn gaps(answers: &[AnswerRecord], votes: &[Vote], embedder: &dyn Embedder) -> anyhow::Result<Vec<Gap>> {
    let down: HashSet<&str> = votes.iter().filter(|v| v.rating == Rating::Down).map(|v| v.answer_id.as_str()).collect();
    let mut missed: Vec<&AnswerRecord> =
        answers.iter().filter(|a| a.abstained || down.contains(a.id.as_str())).collect();
    missed.sort_by_key(|a| std::cmp::Reverse(a.time_ms));
    missed.truncate(GAP_QUESTIONS);
    if missed.is_empty() {
        return Ok(Vec::new());
    }
    let texts: Vec<String> = missed.iter().map(|a| a.question.clone()).collect();
    let vectors = embedder.embed(&texts).await?;
    let mut groups: Vec<Group> = Vec::new();
    for (answer, vector) in missed.iter().zip(vectors) {
        match groups.iter_mut().find(|g| cosine(&g.mean(), &vector) >= SAME_GAP) {
            Some(group) => group.add(answer, vector),
            None => groups.push(Group::new(answer, vector)),
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.count));
    Ok(groups.into_iter().map(Group::into_gap).collect())
}

struct Group {
    sum: Vec<f32>,
    count: usize,
    bots: Vec<String>,
    examples: Vec<String>,
}

impl Group {
    fn new(answer: &AnswerRecord, vector: Vec<f32>) -> Self {
        let mut group = Self { sum: vec![0.0; vector.len()], count: 0, bots: Vec::new(), examples: Vec::new() };
        group.add(answer, vector);
        group
    }

    fn mean(&self) -> Vec<f32> {
        self.sum.iter().map(|x| x / self.count as f32).collect()
    }

    fn add(&mut self, answer: &AnswerRecord, vector: Vec<f32>) {
        for (s, v) in self.sum.iter_mut().zip(vector) {
            *s += v;
        }
        self.count += 1;
        if !self.bots.contains(&answer.bot) {
            self.bots.push(answer.bot.clone());
        }
        let question = answer.question.trim().to_string();
        if self.examples.len() < GAP_EXAMPLES && !self.examples.contains(&question) {
            self.examples.push(question);
        }
    }

    fn into_gap(self) -> Gap {
        Gap { count: self.count, bots: self.bots, examples: self.examples }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::question::feedback::ShownSource;

    const DAY: i64 = 86_400_000;
    /// 2026-12-06, noon.
    const NOW: i64 = 1_796_515_200_000 + DAY / 2;

    fn answer(
        id: &str,
        channel: &str,
        question: &str,
        abstained: bool,
        first_token_ms: u64,
        days_ago: i64,
    ) -> AnswerRecord {
        AnswerRecord {
            id: id.into(),
            bot: "docs".into(),
            platform: "telegram".into(),
            channel: channel.into(),
            question: question.into(),
            answer: if abstained { "I don't know.".into() } else { "Bees dance.".into() },
            sources: vec![ShownSource { number: 1, source: "bees.md".into(), location: "lines 1-3".into() }],
            abstained,
            confidence: None,
            model: "m".into(),
            kb: "bees".into(),
            kb_version: Some(1),
            first_token_ms: Some(first_token_ms),
            total_ms: 1000,
            time_ms: NOW - days_ago * DAY,
        }
    }

    fn vote(answer: &str, rating: Rating, comment: Option<&str>) -> Vote {
        Vote {
            answer_id: answer.into(),
            rating,
            comment: comment.map(String::from),
            time_ms: NOW,
            answer: None,
            person: "p".into(),
        }
    }

    #[test]
    fn figures_are_per_bot_channel_and_day_and_the_review_queue_holds_uncorrected_downvotes() {
        let answers = [
            answer("a", "lobby", "Why dance?", false, 100, 0),
            answer("b", "lobby", "Where is parking?", true, 300, 0),
            answer("c", "lobby", "How far?", false, 200, 1),
            answer("d", "private", "Hive size?", false, 50, 0),
            answer("old", "lobby", "Ancient?", false, 1, 40),
        ];
        let votes = [
            vote("a", Rating::Up, None),
            vote("c", Rating::Down, Some("wrong distance")),
            vote("a", Rating::Down, None),
            vote("d", Rating::Down, None),
        ];
        let gold = [StoredGold {
            bot: "docs".into(),
            question: "Hive size?".into(),
            answer: Some("Big".into()),
            source: None,
            answer_id: Some("d".into()),
            time_ms: NOW,
            key: "d".into(),
        }];
        let r = report(&answers, &votes, &gold, NOW, 7, |_| true);
        assert_eq!(r.days.first().map(String::as_str), Some("2026-11-30"));
        assert_eq!(r.days.last().map(String::as_str), Some("2026-12-06"));
        let lobby = &r.places[0];
        assert_eq!((lobby.channel.as_str(), lobby.per_day.len()), ("lobby", 7));
        let t = &lobby.totals;
        assert_eq!(
            (t.questions, t.answered, t.abstained, t.up, t.down),
            (3, 2, 1, 1, 2),
            "the 40-day-old answer is out"
        );
        assert_eq!((t.first_token_p50_ms, t.first_token_p95_ms), (Some(200), Some(300)));
        let today = &lobby.per_day[6];
        assert_eq!((today.questions, today.up, today.down, today.first_token_p50_ms), (2, 1, 1, Some(100)));
        assert_eq!(lobby.per_day[5].down, 1, "a vote counts on its answer's day");
        assert_eq!(r.places[1].channel, "private");

        let queue: Vec<(&str, usize, &[String])> =
            r.review.iter().map(|q| (q.id.as_str(), q.downs, q.comments.as_slice())).collect();
        assert_eq!(queue, [("a", 1, &[][..]), ("c", 1, &["wrong distance".to_string()][..])], "d is corrected already");

        let hidden = report(&answers, &votes, &gold, NOW, 7, |bot| bot != "docs");
        assert!(hidden.places.is_empty() && hidden.review.is_empty(), "a key sees its own bots only");
    }

    /// Words as axes: questions sharing most words are alike.
    struct Words;

    #[async_trait::async_trait]
    impl Embedder for Words {
        fn dim(&self) -> usize {
            4
        }
        fn count_tokens(&self, text: &str) -> usize {
            text.split_whitespace().count()
        }
        fn max_tokens(&self) -> usize {
            512
        }
        async fn embed(&self, texts: &[String]) -> anyhow::Result<Vec<Vec<f32>>> {
            let axis = |t: &str, w: &str| if t.to_lowercase().contains(w) { 1.0 } else { 0.0 };
            Ok(texts.iter().map(|t| ["park", "car", "wifi", "password"].map(|w| axis(t, w)).to_vec()).collect())
        }
    }

    #[tokio::test]
    async fn gaps_group_abstained_and_downvoted_questions_by_meaning_largest_first() {
        let answers = [
            answer("1", "lobby", "Where do I park my car?", true, 1, 0),
            answer("2", "lobby", "Car park near the hall?", true, 1, 0),
            answer("3", "lobby", "What is the wifi password?", false, 1, 0),
            answer("4", "lobby", "Is there a car park?", true, 1, 1),
            answer("5", "lobby", "Why do bees dance?", false, 1, 0),
        ];
        let votes = [vote("3", Rating::Down, None), vote("5", Rating::Up, None)];
        let gaps = gaps(&answers, &votes, &Words).await.unwrap();
        let shown: Vec<(usize, usize)> = gaps.iter().map(|g| (g.count, g.examples.len())).collect();
        assert_eq!(shown, [(3, 3), (1, 1)], "{gaps:?}");
        assert!(gaps[0].examples.iter().all(|q| q.to_lowercase().contains("car")));
        assert_eq!(gaps[1].examples, ["What is the wifi password?"]);
    }
}
