//! Prompts kept in host memory after their sequence's cells are needed for another: the
//! saved KV state of a prompt, restored into a free sequence when a new prompt shares a
//! longer prefix with it than with anything the sequences still hold. With `parallel`
//! sequences only `parallel` prompts stay in the KV cache; a bot's questions come back to
//! the same few passages (and people repeat questions), so more of them are worth keeping.
//! llama.cpp's own server does the same (`--cache-ram`). Pure bookkeeping: the worker
//! saves and restores the states (`T` is a token, `S` a saved state).

use super::schedule::LoraKey;

/// Saved prompts are worth keeping from this many tokens: shorter ones cost little to
/// decode again.
pub(super) const MIN_SAVED_TOKENS: usize = 64;

struct Saved<T, S> {
    tokens: Vec<T>,
    lora: LoraKey,
    state: S,
    bytes: usize,
    /// When it was saved or last restored (a counter): the least recent goes first.
    used: u64,
}

pub(super) struct PromptCache<T, S> {
    saved: Vec<Saved<T, S>>,
    budget_bytes: usize,
    clock: u64,
}

impl<T: PartialEq, S> PromptCache<T, S> {
    /// A cache of at most `budget_bytes` of saved states (0: none is kept).
    pub(super) fn new(budget_bytes: usize) -> Self {
        Self { saved: Vec::new(), budget_bytes, clock: 0 }
    }

    /// Whether a prompt of `tokens` is worth saving: long enough, and not already saved
    /// (nor a prefix of a saved one, which restores it as well).
    pub(super) fn wants(&self, tokens: &[T], lora: LoraKey) -> bool {
        self.budget_bytes > 0
            && tokens.len() >= MIN_SAVED_TOKENS
            && !self.saved.iter().any(|s| s.lora == lora && s.tokens.starts_with(tokens))
    }

    /// Keeps `state` (`bytes` long) of the prompt `tokens`, dropping the saved prompts it
    /// extends and then the least recently used ones until it fits.
    pub(super) fn save(&mut self, tokens: Vec<T>, lora: LoraKey, state: S, bytes: usize) {
        if bytes > self.budget_bytes {
            return;
        }
        self.saved.retain(|s| !(s.lora == lora && tokens.starts_with(&s.tokens)));
        while self.saved.iter().map(|s| s.bytes).sum::<usize>() + bytes > self.budget_bytes {
            let oldest = (0..self.saved.len()).min_by_key(|&i| self.saved[i].used).expect("over budget: not empty");
            self.saved.swap_remove(oldest);
        }
        self.clock += 1;
        self.saved.push(Saved { tokens, lora, state, bytes, used: self.clock });
    }

    /// The saved prompt sharing the longest prefix with `prompt` (at most `limit` tokens,
    /// computed under the same adapter set), and that prefix's length, when it is longer
    /// than `better_than`.
    pub(super) fn best(
        &mut self,
        prompt: &[T],
        lora: LoraKey,
        limit: usize,
        better_than: usize,
    ) -> Option<(&S, usize)> {
        let common = |s: &Saved<T, S>| match s.lora == lora {
            true => s.tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count().min(limit),
            false => 0,
        };
        let i = (0..self.saved.len()).max_by_key(|&i| common(&self.saved[i]))?;
        let shared = common(&self.saved[i]);
        if shared <= better_than {
            return None;
        }
        self.clock += 1;
        self.saved[i].used = self.clock;
        Some((&self.saved[i].state, shared))
    }

    /// Forgets every saved prompt.
    pub(super) fn clear(&mut self) {
        self.saved.clear();
    }

    /// Bytes of saved states held now.
    pub(super) fn bytes(&self) -> usize {
        self.saved.iter().map(|s| s.bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(prefix: u32, len: usize) -> Vec<u32> {
        (0..len as u32).map(|i| if i < 80 { i } else { prefix * 1000 + i }).collect()
    }

    #[test]
    fn the_longest_shared_prefix_wins_when_it_beats_what_the_sequences_hold() {
        let mut cache = PromptCache::new(1000);
        cache.save(prompt(1, 200), None, "one", 100);
        cache.save(prompt(2, 300), None, "two", 100);
        let asked = prompt(2, 250);
        assert_eq!(cache.best(&asked, None, 249, 0), Some((&"two", 249)), "held to the limit");
        assert_eq!(cache.best(&asked, None, 400, 250), None, "a sequence already holds as much");
        assert_eq!(cache.best(&prompt(3, 200), None, 400, 0).map(|(_, n)| n), Some(80), "the shared start");
        assert_eq!(cache.best(&asked, Some((0, 1.0)), 400, 0), None, "cells of another adapter set are other values");
    }

    #[test]
    fn the_least_recently_used_go_first_and_an_extended_prompt_replaces_its_start() {
        let mut cache = PromptCache::new(300);
        cache.save(prompt(1, 100), None, "one", 100);
        cache.save(prompt(2, 100), None, "two", 100);
        cache.save(prompt(3, 100), None, "three", 100);
        cache.best(&prompt(1, 100), None, 400, 0).expect("one is used again");
        cache.save(prompt(4, 100), None, "four", 100);
        assert_eq!(cache.best(&prompt(2, 100), None, 400, 80), None, "two, the least recent, went");
        assert_eq!(cache.best(&prompt(1, 100), None, 400, 80), Some((&"one", 100)));
        cache.save(prompt(1, 150), None, "one, longer", 100);
        assert_eq!(cache.bytes(), 300, "the longer prompt took the shorter one's place");
        assert!(!cache.wants(&prompt(1, 120), None), "a prefix of a saved prompt is restored by it");
        assert!(cache.wants(&prompt(5, 120), None));
    }

    #[test]
    fn short_prompts_oversized_states_and_a_zero_budget_are_not_kept() {
        let mut cache = PromptCache::new(100);
        assert!(!cache.wants(&prompt(1, MIN_SAVED_TOKENS - 1), None));
        cache.save(prompt(1, 100), None, "too big", 101);
        assert_eq!(cache.bytes(), 0);
        let none: PromptCache<u32, &str> = PromptCache::new(0);
        assert!(!none.wants(&prompt(1, 100), None));
        cache.save(prompt(1, 100), None, "fits", 100);
        cache.clear();
        assert_eq!((cache.bytes(), cache.best(&prompt(1, 100), None, 400, 0)), (0, None));
    }
}
