//! The line: every question holds one place in one line, and its retrieval,
//! reranking and generation run when its turn comes. At most `concurrent` questions are
//! answered at once (the engine's `parallel`), people take turns (round-robin by user,
//! in order of first arrival), nobody has more than `per_user_in_flight` answers in
//! progress (work for the generator itself, from another Lore using this one as its
//! engine, is not capped so: one caller carries many people's questions), and a question is refused only when the line is really full, its asker
//! already has `max_waiting_per_person` questions waiting, or is over their rate.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

/// How the line admits questions (`line:` in the config, plus the engine's size).
#[derive(Debug, Clone, PartialEq)]
pub struct LineSettings {
    /// Questions answered at once.
    pub concurrent: usize,
    /// Questions that may wait; more are refused.
    pub max_waiting: usize,
    /// Questions one person may have waiting; more of theirs are refused, so one person
    /// cannot fill the line and lock everyone else out.
    pub max_waiting_per_person: usize,
    /// Answers in progress per user; their further questions wait behind other people's.
    pub per_user_in_flight: usize,
    /// At most this many questions per user in `per`, if set.
    pub rate_limit: Option<(usize, Duration)>,
}

/// Why a question was not let into the line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("too many questions are waiting ({waiting} in line); please ask again in a minute")]
    Full { waiting: usize },
    #[error("you already have {} waiting; I will answer {} first", questions(*waiting), if *waiting == 1 { "it" } else { "those" })]
    TooManyWaiting { waiting: usize },
    #[error("you are asking faster than I can answer (at most {questions} questions every {} s); please ask again in {} s", per.as_secs(), retry_in.as_secs().max(1))]
    RateLimited { questions: usize, per: Duration, retry_in: Duration },
}

fn questions(n: usize) -> String {
    if n == 1 {
        "1 question".into()
    } else {
        format!("{n} questions")
    }
}

/// The line. Cheap to clone.
#[derive(Clone)]
pub struct Line {
    settings: LineSettings,
    // A std Mutex: held only for bookkeeping, never across an await.
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// Users with waiting questions, in turn order.
    turns: VecDeque<String>,
    waiting: HashMap<String, VecDeque<Waiter>>,
    /// People's answers in progress, per user (engine work is not counted).
    in_flight: HashMap<String, usize>,
    active: usize,
    asked_at: HashMap<String, VecDeque<Instant>>,
    next_id: u64,
}

struct Waiter {
    id: u64,
    turn: oneshot::Sender<bool>,
    position: watch::Sender<usize>,
    /// Work for the generator itself: not held to `per_user_in_flight`.
    engine: bool,
}

impl State {
    fn waiting_count(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }
}

impl Line {
    pub fn new(settings: LineSettings) -> Self {
        let settings = LineSettings {
            concurrent: settings.concurrent.max(1),
            per_user_in_flight: settings.per_user_in_flight.max(1),
            max_waiting_per_person: settings.max_waiting_per_person.max(1),
            ..settings
        };
        Self { settings, state: Arc::default() }
    }

    pub fn settings(&self) -> &LineSettings {
        &self.settings
    }

    /// Takes a place in line for `user`'s question.
    pub fn join(&self, user: &str) -> Result<Ticket, Refusal> {
        self.enter(user, true)
    }

    /// Takes a place in line for work a program asks of the generator itself (another Lore
    /// using this one as its engine sends one request per `llm` rerank candidate at once):
    /// like [`Line::join`], without the caps on one person's waiting questions and answers
    /// in progress (one caller carries many people's questions); callers still take turns.
    pub fn join_for_engine_work(&self, user: &str) -> Result<Ticket, Refusal> {
        self.enter(user, false)
    }

    fn enter(&self, user: &str, capped: bool) -> Result<Ticket, Refusal> {
        let mut s = self.lock();
        let waiting = s.waiting_count();
        if waiting >= self.settings.max_waiting {
            return Err(Refusal::Full { waiting });
        }
        let theirs = s.waiting.get(user).map_or(0, VecDeque::len);
        if capped && theirs >= self.settings.max_waiting_per_person {
            return Err(Refusal::TooManyWaiting { waiting: theirs });
        }
        if let Some((questions, per)) = self.settings.rate_limit {
            let now = Instant::now();
            let asked = s.asked_at.entry(user.to_string()).or_default();
            while asked.front().is_some_and(|&t| now.duration_since(t) >= per) {
                asked.pop_front();
            }
            if asked.len() >= questions {
                let retry_in = per.saturating_sub(now.duration_since(asked[0]));
                return Err(Refusal::RateLimited { questions, per, retry_in });
            }
            asked.push_back(now);
        }
        s.next_id += 1;
        let id = s.next_id;
        let (turn_tx, turn_rx) = oneshot::channel();
        let (position_tx, position_rx) = watch::channel(0);
        if !s.turns.contains(&user.to_string()) {
            s.turns.push_back(user.to_string());
        }
        let waiter = Waiter { id, turn: turn_tx, position: position_tx, engine: !capped };
        s.waiting.entry(user.to_string()).or_default().push_back(waiter);
        self.dispatch(&mut s);
        Ok(Ticket {
            line: self.clone(),
            user: user.to_string(),
            id,
            engine: !capped,
            turn: Some(turn_rx),
            position: position_rx,
            taken: false,
            reported: 0,
        })
    }

    /// Questions waiting now (not counting those being answered).
    pub fn waiting(&self) -> usize {
        self.lock().waiting_count()
    }

    /// Questions being answered now.
    pub fn answering(&self) -> usize {
        self.lock().active
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives free places to the next questions in turn order, then tells everyone still
    /// waiting where they now stand.
    fn dispatch(&self, s: &mut State) {
        while s.active < self.settings.concurrent {
            let Some(user) = self.next_user(s) else { break };
            let queue = s.waiting.get_mut(&user).expect("users in turn order have waiting questions");
            let waiter = queue.pop_front().expect("non-empty");
            if queue.is_empty() {
                s.waiting.remove(&user);
                s.turns.retain(|u| u != &user);
            } else {
                // Their next question goes behind everyone else's.
                s.turns.retain(|u| u != &user);
                s.turns.push_back(user.clone());
            }
            let busy = s.waiting_count() > 0;
            // A send fails only when the asker gave up between dropping its receiver and
            // leaving the line: the place stays free.
            if waiter.turn.send(busy).is_ok() {
                s.active += 1;
                if !waiter.engine {
                    *s.in_flight.entry(user).or_default() += 1;
                }
            }
        }
        for (position, waiter) in self.order(s).into_iter().enumerate() {
            waiter.position.send_if_modified(|p| std::mem::replace(p, position + 1) != position + 1);
        }
    }

    /// The first user in turn order who may have one more answer in progress: anyone
    /// whose next waiting question is engine work, or a person under their cap.
    fn next_user(&self, s: &State) -> Option<String> {
        let may_start = |u: &String| {
            s.waiting.get(u).and_then(VecDeque::front).is_some_and(|w| w.engine)
                || s.in_flight.get(u).copied().unwrap_or(0) < self.settings.per_user_in_flight
        };
        s.turns.iter().find(|u| may_start(u)).cloned()
    }

    /// Everyone waiting, in the order they will be served if nobody else arrives: one
    /// question per user per round, users in turn order.
    fn order<'s>(&self, s: &'s State) -> Vec<&'s Waiter> {
        let mut out = Vec::with_capacity(s.waiting_count());
        for round in 0.. {
            let before = out.len();
            for user in &s.turns {
                if let Some(w) = s.waiting.get(user).and_then(|q| q.get(round)) {
                    out.push(w);
                }
            }
            if out.len() == before {
                break;
            }
        }
        out
    }

    /// Frees a place; `engine`: it held engine work, which `in_flight` does not count.
    fn release(&self, user: &str, engine: bool) {
        let mut s = self.lock();
        s.active = s.active.saturating_sub(1);
        if let Some(n) = s.in_flight.get_mut(user).filter(|_| !engine) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.in_flight.remove(user);
            }
        }
        self.dispatch(&mut s);
    }

    /// Removes a question that is still waiting; false when it already had its turn.
    fn leave(&self, user: &str, id: u64) -> bool {
        let mut s = self.lock();
        let Some(queue) = s.waiting.get_mut(user) else { return false };
        let Some(at) = queue.iter().position(|w| w.id == id) else { return false };
        queue.remove(at);
        if queue.is_empty() {
            s.waiting.remove(user);
            s.turns.retain(|u| u != user);
        }
        self.dispatch(&mut s);
        true
    }
}

/// A question's place in line.
pub struct Ticket {
    line: Line,
    user: String,
    id: u64,
    /// Work for the generator itself ([`Line::join_for_engine_work`]).
    engine: bool,
    turn: Option<oneshot::Receiver<bool>>,
    position: watch::Receiver<usize>,
    /// The turn came and a [`Slot`] now owns the place.
    taken: bool,
    /// The last position [`Ticket::wait`] reported.
    reported: usize,
}

impl Ticket {
    /// 1 = next; 0 = its turn has come.
    pub fn position(&self) -> usize {
        *self.position.borrow()
    }

    /// Waits until this question has a new position in line (its first one included) or
    /// its turn comes.
    pub async fn wait(&mut self) -> Wait {
        const DROPPED: &str = "the line drops a waiting question only when its ticket leaves";
        loop {
            let turn = self.turn.as_mut().expect("a ticket waits until its turn, once");
            // A turn already given wins over any position.
            match turn.try_recv() {
                Ok(busy) => return self.take_turn(busy),
                Err(oneshot::error::TryRecvError::Empty) => {}
                Err(oneshot::error::TryRecvError::Closed) => panic!("{DROPPED}"),
            }
            let p = *self.position.borrow_and_update();
            if p > 0 && p != self.reported {
                self.reported = p;
                return Wait::Moved(p);
            }
            let granted = tokio::select! {
                // The position channel closes when the turn comes: look at the turn first.
                biased;
                granted = turn => Some(granted.expect(DROPPED)),
                _ = self.position.changed() => None,
            };
            if let Some(busy) = granted {
                return self.take_turn(busy);
            }
        }
    }

    fn take_turn(&mut self, busy: bool) -> Wait {
        self.turn = None;
        // From here the place is the Slot's to release.
        self.taken = true;
        Wait::Turn(Slot { line: self.line.clone(), user: self.user.clone(), engine: self.engine, busy })
    }

    /// Waits for this question's turn, calling `moved` with each new position in line.
    pub async fn turn(mut self, mut moved: impl FnMut(usize)) -> Slot {
        loop {
            match self.wait().await {
                Wait::Moved(p) => moved(p),
                Wait::Turn(t) => return t,
            }
        }
    }
}

/// What a waiting question learns.
pub enum Wait {
    /// Its new position (1 = next).
    Moved(usize),
    /// Its turn: answer now.
    Turn(Slot),
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.taken || self.line.leave(&self.user, self.id) {
            return;
        }
        // Not in line any more: the turn was granted. If nobody took it, free the place.
        if let Some(mut turn) = self.turn.take() {
            if turn.try_recv().is_ok() {
                self.line.release(&self.user, self.engine);
            }
        }
    }
}

/// One of the `parallel` places being answered, held by a question whose turn came;
/// dropping it frees the place for the next one.
pub struct Slot {
    line: Line,
    user: String,
    engine: bool,
    /// Others were still waiting when this turn came.
    pub busy: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.line.release(&self.user, self.engine);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(concurrent: usize, max_waiting: usize) -> Line {
        Line::new(LineSettings {
            concurrent,
            max_waiting,
            max_waiting_per_person: max_waiting,
            per_user_in_flight: 1,
            rate_limit: None,
        })
    }

    /// Joins and returns the ticket with whether its turn came at once.
    fn join(line: &Line, user: &str) -> Ticket {
        line.join(user).unwrap()
    }

    async fn now(t: Ticket) -> Slot {
        tokio::time::timeout(Duration::from_secs(1), t.turn(|_| {})).await.expect("the turn came")
    }

    #[tokio::test]
    async fn distinct_users_are_served_in_order_of_arrival() {
        let l = line(2, 10);
        let a = now(join(&l, "a")).await;
        let _b = now(join(&l, "b")).await;
        let c = join(&l, "c");
        let d = join(&l, "d");
        assert_eq!((c.position(), d.position()), (1, 2));
        drop(a);
        let c = now(c).await;
        assert!(!c.busy || l.waiting() == 1);
        assert_eq!(d.position(), 1);
    }

    #[tokio::test]
    async fn a_flooding_user_waits_behind_everyone_else() {
        let l = line(1, 100);
        let first = now(join(&l, "flood")).await;
        let mut tickets: Vec<(&str, Ticket)> = (0..9).map(|_| ("flood", join(&l, "flood"))).collect();
        tickets.extend(["x", "y", "z"].map(|u| (u, join(&l, u))));
        // One of the flood's, then x, y, z, then the rest of the flood.
        let positions: Vec<usize> = tickets.iter().map(|(_, t)| t.position()).collect();
        assert_eq!(positions, vec![1, 5, 6, 7, 8, 9, 10, 11, 12, 2, 3, 4]);
        let served = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = tickets
            .into_iter()
            .map(|(user, t)| {
                let served = served.clone();
                tokio::spawn(async move {
                    let turn = t.turn(|_| {}).await;
                    served.lock().unwrap().push(user);
                    drop(turn);
                })
            })
            .collect();
        drop(first);
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(1), t).await.unwrap().unwrap();
        }
        let served = served.lock().unwrap().clone();
        assert_eq!(served, [&["flood", "x", "y", "z"][..], &["flood"; 8]].concat());
    }

    #[tokio::test]
    async fn one_user_has_at_most_one_answer_in_progress() {
        let l = line(4, 10);
        let _a1 = now(join(&l, "a")).await;
        let a2 = join(&l, "a");
        let b = now(join(&l, "b")).await;
        assert_eq!(a2.position(), 1, "a's second question waits though places are free");
        drop(b);
        assert_eq!(a2.position(), 1);
    }

    #[tokio::test]
    async fn engine_work_from_one_caller_fills_every_place_and_people_keep_their_cap() {
        let l = line(3, 10);
        // Another Lore using this one as its engine: all its people's questions, one key.
        let engine: Vec<Slot> =
            futures::future::join_all((0..3).map(|_| now(l.join_for_engine_work("lore-b").unwrap()))).await;
        assert_eq!(l.answering(), 3);
        let more = l.join_for_engine_work("lore-b").unwrap();
        let ann = join(&l, "ann");
        assert_eq!((more.position(), ann.position()), (1, 2), "in order of arrival");
        drop(engine);
        let (_more, _ann) = (now(more).await, now(ann).await);
        let ann2 = join(&l, "ann");
        assert_eq!(ann2.position(), 1, "ann's second question waits though a place is free");
        let _work = now(l.join_for_engine_work("lore-b").unwrap()).await;
        assert_eq!(ann2.position(), 1, "and the engine work that came after her took that place");
    }

    #[tokio::test]
    async fn a_full_line_refuses_and_a_cancelled_question_leaves_it() {
        let l = line(1, 2);
        let _busy = now(join(&l, "a")).await;
        let b = join(&l, "b");
        let _c = join(&l, "c");
        assert_eq!(l.join("d").err(), Some(Refusal::Full { waiting: 2 }));
        drop(b);
        assert_eq!(l.waiting(), 1);
        assert!(l.join("d").is_ok());
    }

    #[tokio::test]
    async fn a_finished_answer_lets_the_next_in() {
        let l = line(1, 5);
        let a = now(join(&l, "a")).await;
        let b = join(&l, "b");
        let mut seen = vec![];
        let waiter = tokio::spawn(async move {
            let t = b.turn(|p| seen.push(p)).await;
            (t.busy, seen)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a);
        let (busy, _) = tokio::time::timeout(Duration::from_secs(1), waiter).await.unwrap().unwrap();
        assert!(!busy, "nobody else was waiting");
    }

    #[tokio::test]
    async fn one_person_waits_with_a_few_questions_at_most_and_others_still_get_in() {
        let l = Line::new(LineSettings {
            concurrent: 1,
            max_waiting: 64,
            max_waiting_per_person: 3,
            per_user_in_flight: 1,
            rate_limit: None,
        });
        let _answering = now(join(&l, "flood")).await;
        let waiting: Vec<Ticket> = (0..3).map(|_| join(&l, "flood")).collect();
        let refused = l.join("flood").err().expect("a fourth waiting question is refused");
        assert_eq!(refused, Refusal::TooManyWaiting { waiting: 3 });
        assert_eq!(refused.to_string(), "you already have 3 questions waiting; I will answer those first");
        let other = l.join("other").expect("someone else still gets a place");
        assert_eq!(other.position(), 2, "behind the flood's first waiting question only");
        assert!(l.join_for_engine_work("flood").is_ok(), "engine work is not a person's question");
        drop(waiting);
        assert!(l.join("flood").is_ok(), "a place freed is theirs again");
    }

    #[tokio::test]
    async fn the_rate_limit_answers_with_a_wait() {
        let l = Line::new(LineSettings {
            concurrent: 4,
            max_waiting: 10,
            max_waiting_per_person: 10,
            per_user_in_flight: 4,
            rate_limit: Some((2, Duration::from_secs(60))),
        });
        let _a = l.join("a").unwrap();
        let _b = l.join("a").unwrap();
        match l.join("a").err() {
            Some(Refusal::RateLimited { questions: 2, retry_in, .. }) => assert!(retry_in > Duration::from_secs(50)),
            other => panic!("{other:?}"),
        }
        assert!(l.join("b").is_ok(), "other people are not limited");
    }
}
