//! Choosing each next token. llama.cpp's `llama_sampler_sample` copies the whole
//! vocabulary (50k entries for GPT-NeoX) into a candidate list for every token of every
//! sequence; on a GPU that host work was a large part of each decoding step
//! (docs/BENCHMARKS.md). A token outside the `top_k` highest logits, counting the tokens a
//! repeat penalty may push down, can never be chosen, so only those candidates go through
//! llama.cpp's samplers, which then choose exactly as they would from the whole list.

use std::collections::VecDeque;

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use lore_core::Sampling;

/// How many recent tokens the repeat penalty looks at (llama.cpp's `penalty_last_n`).
const PENALTY_WINDOW: usize = 64;

pub(crate) struct TokenChooser {
    chain: LlamaSampler,
    /// Candidates the chain needs besides penalised tokens: 1 when greedy, else `top_k`;
    /// 0 when every token can be chosen (`top_k` 0).
    keep: usize,
    /// The last tokens chosen, when a repeat penalty is set.
    recent: Option<VecDeque<LlamaToken>>,
    top: Vec<(f32, i32)>,
}

impl TokenChooser {
    pub(crate) fn new(model: &LlamaModel, s: &Sampling) -> Self {
        let (chain, keep) = chain(model.n_vocab(), s);
        Self {
            chain,
            keep,
            recent: (s.repeat_penalty != 1.0).then(|| VecDeque::with_capacity(PENALTY_WINDOW)),
            top: Vec::new(),
        }
    }

    /// The next token, given the logits that predict it.
    pub(crate) fn choose(&mut self, logits: &[f32]) -> LlamaToken {
        let mut penalised: Vec<i32> = self.recent.iter().flatten().map(|t| t.0).collect();
        penalised.sort_unstable();
        penalised.dedup();
        // Penalties only move the penalised tokens, so the top `keep` after them lie among
        // the top `keep + penalised` before them, plus the penalised tokens themselves.
        let wanted = self.keep + penalised.len();
        let candidates: Vec<LlamaTokenData> = if self.keep == 0 || wanted >= logits.len() {
            logits.iter().enumerate().map(|(i, &l)| LlamaTokenData::new(LlamaToken(i as i32), l, 0.0)).collect()
        } else {
            highest(logits, wanted, &mut self.top);
            let extra = penalised.iter().filter(|&&t| !self.top.iter().any(|&(_, i)| i == t));
            let extra: Vec<(f32, i32)> = extra.filter_map(|&t| logits.get(t as usize).map(|&l| (l, t))).collect();
            self.top.iter().chain(&extra).map(|&(l, i)| LlamaTokenData::new(LlamaToken(i), l, 0.0)).collect()
        };
        let mut array = LlamaTokenDataArray::new(candidates, false);
        self.chain.apply(&mut array);
        let token = array.selected_token().expect("the sampler chain ends with a choosing sampler");
        self.chain.accept(token);
        if let Some(recent) = &mut self.recent {
            if recent.len() == PENALTY_WINDOW {
                recent.pop_front();
            }
            recent.push_back(token);
        }
        token
    }
}

/// llama.cpp's samplers for `s`, and how many of the highest logits they choose among.
fn chain(n_vocab: i32, s: &Sampling) -> (LlamaSampler, usize) {
    let mut chain = Vec::new();
    if s.repeat_penalty != 1.0 {
        chain.push(LlamaSampler::penalties(n_vocab, PENALTY_WINDOW as i32, s.repeat_penalty, 0.0, 0.0));
    }
    let keep = if s.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
        1
    } else {
        chain.push(LlamaSampler::top_k(s.top_k as i32));
        chain.push(LlamaSampler::top_p(s.top_p, 1));
        chain.push(LlamaSampler::min_p(s.min_p, 1));
        chain.push(LlamaSampler::temp(s.temperature));
        chain.push(LlamaSampler::dist(s.seed));
        s.top_k as usize
    };
    (LlamaSampler::chain_simple(chain), keep)
}

/// The `n` highest logits with their token ids into `out`, highest first, without
/// looking at most of them: the `n`-th highest maximum of blocks of [`BLOCK`] logits is a
/// bar that at least `n` logits clear, so only blocks whose maximum clears it are read.
fn highest(logits: &[f32], n: usize, out: &mut Vec<(f32, i32)>) {
    out.clear();
    let mut maxima: Vec<f32> = logits.chunks(BLOCK).map(block_max).collect();
    let bar = if maxima.len() > n {
        *maxima.clone().select_nth_unstable_by(n - 1, |a, b| b.total_cmp(a)).1
    } else {
        f32::NEG_INFINITY
    };
    for (b, m) in maxima.drain(..).enumerate() {
        if m < bar {
            continue;
        }
        for (j, &l) in logits[b * BLOCK..].iter().take(BLOCK).enumerate() {
            // `out` ascends while it fills, so `out[0]` is the lowest kept.
            if l.is_nan() || out.len() == n && l <= out[0].0 {
                continue;
            }
            if out.len() == n {
                out.remove(0);
            }
            let at = out.partition_point(|&(x, _)| x < l);
            out.insert(at, (l, (b * BLOCK + j) as i32));
        }
    }
    out.reverse();
}

const BLOCK: usize = 64;

/// The highest of `block` (NaN ignored), in eight lanes the compiler turns into vector
/// maximum instructions.
fn block_max(block: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = block.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = if v > *lane { v } else { *lane };
        }
    }
    lanes.iter().chain(rest).fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// The same choices as llama.cpp's samplers given the whole vocabulary, token for
    /// token, for greedy and sampled decoding with and without a repeat penalty.
    #[test]
    fn chooses_as_llama_cpp_does_from_the_whole_vocabulary() {
        let n_vocab = 5000;
        let mut state = 7u64;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        let settings = [
            Sampling::greedy(),
            Sampling::default(),
            Sampling { temperature: 0.8, ..Sampling::default() },
            Sampling { temperature: 1.0, repeat_penalty: 1.0, top_k: 0, ..Sampling::default() },
        ];
        for s in settings {
            let (whole, _) = chain(n_vocab, &s);
            let mut whole = whole;
            let (chain, keep) = chain(n_vocab, &s);
            let recent = (s.repeat_penalty != 1.0).then(VecDeque::new);
            let mut chooser = TokenChooser { chain, keep, recent, top: Vec::new() };
            for step in 0..300 {
                // Peaked logits, and a favourite token that the penalty must push down.
                let logits: Vec<f32> = (0..n_vocab).map(|i| next() * 8.0 + if i == 42 { 9.0 } else { 0.0 }).collect();
                let mut array = LlamaTokenDataArray::from_iter(
                    logits.iter().enumerate().map(|(i, &l)| LlamaTokenData::new(LlamaToken(i as i32), l, 0.0)),
                    false,
                );
                whole.apply(&mut array);
                let expected = array.selected_token().unwrap();
                whole.accept(expected);
                assert_eq!(chooser.choose(&logits), expected, "step {step} with {s:?}");
            }
        }
    }

    #[test]
    fn finds_the_highest_logits_in_order() {
        let logits = [0.5, -1.0, 3.0, 2.0, f32::NAN, 3.5, 0.0];
        let mut out = Vec::new();
        highest(&logits, 3, &mut out);
        assert_eq!(out, vec![(3.5, 5), (3.0, 2), (2.0, 3)]);
        highest(&logits, 1, &mut out);
        assert_eq!(out, vec![(3.5, 5)]);
        // Across many blocks, the highest ones crowded into a few and spread over others.
        let mut logits = vec![0.0f32; 50_000];
        for (k, i) in [7, 8, 9, 10, 20_000, 49_999].into_iter().enumerate() {
            logits[i] = 10.0 + k as f32;
        }
        highest(&logits, 4, &mut out);
        assert_eq!(out, vec![(15.0, 49_999), (14.0, 20_000), (13.0, 10), (12.0, 9)]);
    }
}
