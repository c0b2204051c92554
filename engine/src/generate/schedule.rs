//! The worker's decisions, as pure functions of what it knows about its sequences: which
//! adapter set a step decodes, what the step's batch holds, which free sequence a new
//! request takes and how much of a kept prompt it reuses, how a full KV cache is made room
//! in, and when an answer has run out of tokens. No llama.cpp types: the tests need no
//! model file. The worker (`worker.rs`) carries the decisions out on the context.

use lore_core::StopReason;

/// The adapter set a sequence is decoded with: an index into the loaded adapters and its
/// scale, or `None` for the base model.
pub(super) type LoraKey = Option<(usize, f32)>;

/// Steps one adapter set decodes in a row while sequences of another wait: a turn of a
/// few tokens each keeps both answers streaming, and switching less often spares
/// llama.cpp rebuilding its compute graphs for every token.
pub(super) const LORA_TURN_STEPS: usize = 8;

/// A shared prefix shorter than this is decoded again: reusing it saves too little to be
/// worth keeping a free sequence's tokens apart.
pub(super) const MIN_REUSE_TOKENS: usize = 16;

/// The adapter set this step decodes, and how many steps in a row it will have decoded
/// after this one: the set applied now for up to [`LORA_TURN_STEPS`] steps while others
/// wait (switching makes llama.cpp rebuild its compute graphs), then the set whose
/// sequences have waited longest. `running` lists, in sequence order, each running
/// sequence's adapter set and the step that last decoded it. `None` when nothing runs.
pub(super) fn adapter_set_for_step(
    applied: LoraKey,
    turn: usize,
    running: impl Iterator<Item = (LoraKey, u64)> + Clone,
) -> Option<(LoraKey, usize)> {
    let current_has_work = running.clone().any(|(lora, _)| lora == applied);
    let others_wait = running.clone().any(|(lora, _)| lora != applied);
    if current_has_work && (!others_wait || turn < LORA_TURN_STEPS) {
        return Some((applied, turn + 1));
    }
    let (next, _) = running.filter(|&(lora, _)| lora != applied).min_by_key(|&(_, last_step)| last_step)?;
    Some((next, 1))
}

/// What a running sequence asks of a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Want {
    pub(super) lora: LoraKey,
    /// It has sampled a token that is to be decoded next: it is answering.
    pub(super) answering: bool,
    /// Prompt tokens not yet in the cache.
    pub(super) prompt_left: usize,
}

/// What a step's batch holds of one sequence.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Share {
    /// The step is this sequence's turn: its adapter set's wait starts again.
    pub(super) served: bool,
    /// Its next token is decoded.
    pub(super) next_token: bool,
    /// Prompt tokens decoded (chunked prefill).
    pub(super) prompt_tokens: usize,
}

/// The batch of a step that decodes adapter set `lora`, up to `batch_tokens` tokens: the
/// next token of every answering sequence first (answers in progress never wait for
/// someone else's prompt), then prompt chunks in sequence order (chunked prefill). One
/// share per entry of `wants` (`None`: a free sequence).
pub(super) fn fill_batch(wants: &[Option<Want>], lora: LoraKey, batch_tokens: usize) -> Vec<Share> {
    let mut shares = vec![Share::default(); wants.len()];
    let mut budget = batch_tokens;
    for (want, share) in wants.iter().zip(&mut shares) {
        let Some(want) = want.filter(|w| w.lora == lora) else { continue };
        share.served = true;
        if want.answering {
            if budget == 0 {
                break;
            }
            share.next_token = true;
            budget -= 1;
        }
    }
    for (want, share) in wants.iter().zip(&mut shares) {
        let Some(want) = want.filter(|w| w.lora == lora && !w.answering) else { continue };
        share.prompt_tokens = want.prompt_left.min(budget);
        budget -= share.prompt_tokens;
    }
    shares
}

/// What a free sequence's part of the KV cache holds: the prompt of its last request, and
/// the adapter set it was computed with.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Kept<T> {
    pub(super) tokens: Vec<T>,
    pub(super) lora: LoraKey,
}

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Self { tokens: Vec::new(), lora: None }
    }
}

/// Where a new request goes: the free sequence it takes, and how many of its prompt's
/// tokens that sequence's cache already holds (the rest of that cache is to be dropped).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Place {
    pub(super) seq: usize,
    pub(super) reused: usize,
}

/// The free sequence (of `free`, in sequence order) whose kept prompt shares the longest
/// prefix with `prompt` — among equals the one keeping least, then the last — and that
/// prefix when it is at least [`MIN_REUSE_TOKENS`] long. Cells computed under another
/// adapter set hold other values: they are never reused. `None` when no sequence is free.
pub(super) fn place_request<T: PartialEq>(
    kept: &[Kept<T>],
    free: impl Iterator<Item = usize>,
    prompt: &[T],
    lora: LoraKey,
    score_from: Option<usize>,
) -> Option<Place> {
    let limit = reusable_prefix_limit(prompt.len(), score_from);
    let common = |s: usize| match kept[s].lora == lora {
        true => kept[s].tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count().min(limit),
        false => 0,
    };
    let seq = free.max_by_key(|&s| (common(s), std::cmp::Reverse(kept[s].tokens.len())))?;
    let shared = common(seq);
    Some(Place { seq, reused: if shared >= MIN_REUSE_TOKENS { shared } else { 0 } })
}

/// How much of a prompt of `prompt_len` tokens may come from the cache: at least one
/// token is decoded (its logits start the answer); scoring needs the logits from the
/// token before the scored part (`score_from`).
pub(super) fn reusable_prefix_limit(prompt_len: usize, score_from: Option<usize>) -> usize {
    prompt_len.saturating_sub(1).min(score_from.map_or(usize::MAX, |from| from.saturating_sub(1)))
}

/// How the worker makes room when the KV cache has no cell for a step's batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum MakeRoom {
    /// Drop the prompts free sequences keep for reuse.
    DropKept,
    /// Fail this sequence's request: the most recently admitted one, rather than everyone.
    Fail(usize),
}

/// Kept prompts go first (`free_sequences_keep`: some free sequence keeps one); only then
/// does a request fail, the newest of `running` (each running sequence and its admission
/// number, higher = admitted later). `None` when nothing runs.
pub(super) fn make_room(free_sequences_keep: bool, running: impl Iterator<Item = (usize, u64)>) -> Option<MakeRoom> {
    if free_sequences_keep {
        return Some(MakeRoom::DropKept);
    }
    let (newest, _) = running.max_by_key(|&(_, admitted)| admitted)?;
    Some(MakeRoom::Fail(newest))
}

/// Why an answer stops after its latest token, when neither end-of-text nor a stop string
/// ended it: `max_tokens` generated, or no cell left in the sequence (`n_past` tokens of
/// `context_tokens`) for the next one.
pub(super) fn out_of_tokens(
    generated: usize,
    max_tokens: usize,
    n_past: usize,
    context_tokens: usize,
) -> Option<StopReason> {
    if generated >= max_tokens {
        Some(StopReason::Length)
    } else if n_past + 1 >= context_tokens {
        Some(StopReason::ContextFull)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: LoraKey = Some((0, 1.0));
    const B: LoraKey = Some((1, 1.0));
    const A_HALF: LoraKey = Some((0, 0.5));

    #[test]
    fn adapter_set_for_step() {
        fn check(
            name: &str,
            applied: LoraKey,
            turn: usize,
            running: &[(LoraKey, u64)],
            expected: Option<(LoraKey, usize)>,
        ) {
            assert_eq!(super::adapter_set_for_step(applied, turn, running.iter().copied()), expected, "{name}");
        }
        check("nothing runs", None, 3, &[], None);
        check("the applied set alone keeps going past its turn", A, 40, &[(A, 9), (A, 9)], Some((A, 41)));
        check("the applied set keeps its turn while others wait", A, 1, &[(A, 5), (B, 1)], Some((A, 2)));
        check("up to eight steps", A, 7, &[(A, 5), (B, 1)], Some((A, 8)));
        check("then the other set goes", A, 8, &[(A, 5), (B, 1)], Some((B, 1)));
        check("a set with no work left hands over at once", A, 2, &[(B, 4), (None, 6)], Some((B, 1)));
        check("the set that waited longest goes next", A, 8, &[(A, 9), (None, 6), (B, 4)], Some((B, 1)));
        check("on a tie, the first sequence's set", A, 8, &[(A, 9), (None, 4), (B, 4)], Some((None, 1)));
        check("the same adapter at another scale is another set", A, 8, &[(A, 9), (A_HALF, 2)], Some((A_HALF, 1)));
        check("the base model is a set like the others", None, 8, &[(None, 9), (A, 3)], Some((A, 1)));
    }

    #[test]
    #[rustfmt::skip]
    fn fill_batch() {
        fn check(name: &str, wants: &[Option<Want>], lora: LoraKey, batch_tokens: usize, expected: &[Share]) {
            assert_eq!(super::fill_batch(wants, lora, batch_tokens), expected, "{name}");
        }
        // A sequence answering, or reading a prompt of so many tokens; what the step gives it.
        let answering = |lora| Some(Want { lora, answering: true, prompt_left: 0 });
        let reading = |lora, prompt_left| Some(Want { lora, answering: false, prompt_left });
        let next_token = Share { served: true, next_token: true, prompt_tokens: 0 };
        let prompt = |prompt_tokens| Share { served: true, next_token: false, prompt_tokens };
        let idle = Share::default();
        check("answers first, then prompt chunks in sequence order",
              &[reading(None, 30), answering(None), None, reading(None, 30)], None, 32,
              &[prompt(30), next_token, idle, prompt(1)]);
        check("a long prompt is read in chunks", &[reading(None, 100)], None, 32, &[prompt(32)]);
        check("a short prompt takes what it needs and leaves the rest",
              &[reading(None, 5), reading(None, 100)], None, 32,
              &[prompt(5), prompt(27)]);
        check("other adapter sets wait and are not served",
              &[answering(A), answering(B), reading(A, 10)], A, 32,
              &[next_token, idle, prompt(10)]);
        check("answers fill a small batch; the set's later sequences are not served",
              &[answering(None), answering(None), answering(None), reading(None, 4)], None, 2,
              &[next_token, next_token, prompt(0), idle]);
        check("no prompt tokens once the answers took the batch",
              &[reading(None, 4), answering(None)], None, 1,
              &[prompt(0), next_token]);
        check("nothing of the set runs", &[answering(B), None], A, 8, &[idle, idle]);
    }

    #[test]
    #[rustfmt::skip]
    fn place_request() {
        fn check(name: &str, kept: &[(&str, LoraKey)], free: &[usize], prompt: &str, job: (LoraKey, Option<usize>),
                 expected: Option<(usize, usize)>) {
            let kept: Vec<_> = kept.iter().map(|&(t, lora)| Kept { tokens: t.bytes().collect(), lora }).collect();
            let placed = super::place_request(&kept, free.iter().copied(), prompt.as_bytes(), job.0, job.1);
            assert_eq!(placed, expected.map(|(seq, reused)| Place { seq, reused }), "{name}");
        }
        // Tokens are bytes here. A job is its adapter set and where scoring starts.
        let system = "You answer from the notes. ";
        let question = &format!("{system}Q: bees?");
        let (n_system, n_question) = (system.len(), question.len());
        let (generate, empty) = ((None, None), ("", None));
        check("no free sequence", &[empty], &[], "x", generate, None);
        check("an empty cache: the last free sequence", &[empty, empty, empty], &[0, 1, 2], question, generate,
              Some((2, 0)));
        check("the longest shared prefix wins", &[("You answer", None), (system, None), ("other", None)], &[0, 1, 2],
              question, generate, Some((1, n_system)));
        check("only free sequences are candidates", &[(system, None), ("You answer", None)], &[1], question, generate,
              Some((1, 0)));
        check("a prefix under MIN_REUSE_TOKENS is decoded again", &[("You answer from", None)], &[0], question,
              generate, Some((0, 0)));
        check("sharing nothing: the sequence keeping least", &[("long kept prompt", None), ("short", None),
              ("longer", None)], &[0, 1, 2], question, generate, Some((1, 0)));
        check("not under another adapter set", &[(system, A)], &[0], question, (B, None), Some((0, 0)));
        check("nor under the same adapter at another scale", &[(system, A)], &[0], question, (A_HALF, None),
              Some((0, 0)));
        check("under the same set it is reused", &[(system, A)], &[0], question, (A, None), Some((0, n_system)));
        check("the same prompt again decodes its last token", &[(question, None)], &[0], question, generate,
              Some((0, n_question - 1)));
        check("scoring decodes from the token before the scored part", &[(question, None)], &[0], question,
              (None, Some(n_system)), Some((0, n_system - 1)));
    }

    #[test]
    fn make_room() {
        fn check(name: &str, free_sequences_keep: bool, running: &[(usize, u64)], expected: Option<MakeRoom>) {
            assert_eq!(super::make_room(free_sequences_keep, running.iter().copied()), expected, "{name}");
        }
        check("kept prompts go first", true, &[(0, 1), (1, 2)], Some(MakeRoom::DropKept));
        check(
            "then the most recently admitted request fails",
            false,
            &[(0, 7), (1, 3), (2, 5)],
            Some(MakeRoom::Fail(0)),
        );
        check("whatever its sequence", false, &[(0, 3), (3, 9)], Some(MakeRoom::Fail(3)));
        check("nothing runs", false, &[], None);
    }

    #[test]
    fn out_of_tokens() {
        fn check(
            name: &str,
            generated: usize,
            max_tokens: usize,
            n_past: usize,
            context_tokens: usize,
            expected: Option<StopReason>,
        ) {
            assert_eq!(super::out_of_tokens(generated, max_tokens, n_past, context_tokens), expected, "{name}");
        }
        check("room left", 3, 10, 50, 100, None);
        check("max_tokens reached", 10, 10, 50, 100, Some(StopReason::Length));
        check("no cell for the next token", 3, 10, 99, 100, Some(StopReason::ContextFull));
        check("the length comes first", 10, 10, 99, 100, Some(StopReason::Length));
        check("max_tokens 0 stops after the first", 1, 0, 5, 100, Some(StopReason::Length));
    }
}
