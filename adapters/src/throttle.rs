//! Spacing out message edits per place (a channel or chat), so that several answers streaming
//! in one place together stay under the platform's edit limit — and slowing down where the
//! platform says it is still too fast. Telegram groups allow about 20 messages a minute,
//! far fewer than private chats: a fixed interval either wastes private chats or runs
//! groups into 429s, so each place learns its own pace from the 429s it gets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// The slowest a place is ever edited: an answer still shows progress twice a minute.
const SLOWEST: Duration = Duration::from_secs(30);
/// Places remembered at most; past that, those back at the base pace are forgotten.
const PLACES: usize = 1024;

/// One place's schedule.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// When the next edit may go out.
    next: Instant,
    interval: Duration,
}

/// Cheap to clone; clones share the schedule.
#[derive(Clone, Debug)]
pub(crate) struct EditThrottle {
    base: Duration,
    // A std Mutex is fine: it is held for a map lookup, never across an await.
    places: Arc<Mutex<HashMap<String, Pace>>>,
}

impl EditThrottle {
    pub(crate) fn new(interval: Duration) -> Self {
        Self { base: interval, places: Arc::default() }
    }

    fn places(&self) -> MutexGuard<'_, HashMap<String, Pace>> {
        self.places.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the slot and returns true when an edit in `place` may go out now.
    pub(crate) fn try_acquire(&self, place: &str) -> bool {
        let now = Instant::now();
        let mut places = self.places();
        let interval = match places.get(place) {
            Some(pace) if now < pace.next => return false,
            Some(pace) => pace.interval,
            None => self.base,
        };
        if places.len() > PLACES {
            let base = self.base;
            places.retain(|_, pace| pace.next > now || pace.interval > base);
        }
        places.insert(place.to_string(), Pace { next: now + interval, interval });
        true
    }

    /// Waits until an edit in `place` may go out, then takes the slot (for final text, which
    /// must not be dropped).
    pub(crate) async fn acquire(&self, place: &str) {
        loop {
            let next = self.places().get(place).map(|pace| pace.next);
            match next {
                Some(next) if next > Instant::now() => tokio::time::sleep_until(next).await,
                _ if self.try_acquire(place) => return,
                _ => {}
            }
        }
    }

    /// The platform refused an edit in `place` as too many: no edit there before
    /// `retry_after` (when it said), and edits there twice as far apart from now on.
    pub(crate) fn slow_down(&self, place: &str, retry_after: Option<Duration>) {
        let now = Instant::now();
        let mut places = self.places();
        let pace = places.entry(place.to_string()).or_insert(Pace { next: now, interval: self.base });
        pace.interval = (pace.interval * 2).max(self.base).min(SLOWEST);
        pace.next = pace.next.max(now + retry_after.unwrap_or(pace.interval));
        tracing::info!(place, interval_ms = pace.interval.as_millis() as u64, "edits slowed down after a rate limit");
    }

    /// An edit in `place` went through: its pace creeps back towards the base, an eighth
    /// at a time, so a place that was rate limited once does not stay slow for good.
    pub(crate) fn went_through(&self, place: &str) {
        if let Some(pace) = self.places().get_mut(place) {
            pace.interval = (pace.interval - pace.interval / 8).max(self.base);
        }
    }

    #[cfg(test)]
    fn interval(&self, place: &str) -> Duration {
        self.places().get(place).map_or(self.base, |pace| pace.interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn edits_are_spaced_per_place() {
        let throttle = EditThrottle::new(Duration::from_millis(100));
        let start = Instant::now();
        assert!(throttle.try_acquire("a"));
        assert!(!throttle.try_acquire("a"));
        assert!(throttle.try_acquire("b"), "places are independent");
        throttle.acquire("a").await;
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert!(!throttle.try_acquire("a"));
    }

    #[tokio::test]
    async fn a_rate_limited_place_waits_then_goes_slower_and_recovers() {
        let base = Duration::from_millis(100);
        let throttle = EditThrottle::new(base);
        assert!(throttle.try_acquire("group"));
        throttle.slow_down("group", Some(Duration::from_millis(500)));
        assert_eq!(throttle.interval("group"), base * 2);
        assert_eq!(throttle.interval("private"), base, "other places keep their pace");

        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!throttle.try_acquire("group"), "the platform's wait is honoured");
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(throttle.try_acquire("group"));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!throttle.try_acquire("group"), "edits are now 200 ms apart");

        for _ in 0..20 {
            throttle.went_through("group");
        }
        assert_eq!(throttle.interval("group"), base, "back to the base pace, never below");
    }

    #[test]
    fn slowing_down_has_a_ceiling() {
        let throttle = EditThrottle::new(Duration::from_secs(1));
        for _ in 0..10 {
            throttle.slow_down("chat", None);
        }
        assert_eq!(throttle.interval("chat"), SLOWEST);
    }
}
