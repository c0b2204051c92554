//! How sure Lore is that an answer is right: signals measured while answering, combined
//! by a model fitted on labelled questions (`lore calibrate`) into one probability, and
//! compared with the threshold fitted with it.
//!
//! Signals come in two stages. Before generating: how well retrieval went (the best
//! passage's cosine similarity and its gap to the second, BM25, the retriever's and the
//! reranker's scores). After: how well the passages support the answer (its words found
//! in them, the best-supporting sentence's score) and how much more likely the generator
//! finds its answer with the passage than without (the open-book/closed-book gain). A
//! calibration holds one combiner per stage and per set of signals, so a question answered
//! while others wait (no `llm` reranker, no scoring passes) is judged by the combiner
//! fitted without those signals.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use lore_core::Hit;
use serde::{Deserialize, Serialize};

/// Signal names, as the calibration file and `lore eval --details` write them.
pub mod signal {
    /// Best cosine similarity between the question and a retrieved passage.
    pub const COSINE_TOP: &str = "cosine_top";
    /// The best similarity minus the second best.
    pub const COSINE_GAP: &str = "cosine_gap";
    /// Best BM25 score among the retrieved passages (0 when full-text search found none).
    pub const BM25_TOP: &str = "bm25_top";
    /// The retriever's score of its first passage (for hybrid, the fused rank score:
    /// highest when both searches put it first).
    pub const RETRIEVER_TOP: &str = "retriever_top";
    /// The reranker's score of the first passage (the `llm` reranker's query likelihood or
    /// the cross-encoder's score); absent without a reranker or when it was skipped.
    pub const RERANK_TOP: &str = "rerank_top";
    /// Share of the answer's content words found in the passages shown.
    pub const ANSWER_IN_PASSAGES: &str = "answer_in_passages";
    /// 1 when the whole answer stands word for word in a passage shown.
    pub const ANSWER_SPAN: &str = "answer_span";
    /// Share of the answer's content words found in the best-supporting sentence.
    pub const ANSWER_IN_QUOTE: &str = "answer_in_quote";
    /// The best-supporting sentence's score (cross-encoder, else cosine similarity).
    pub const SUPPORT: &str = "support";
    /// Mean log-probability of the answer after the prompt with its passages.
    pub const LL_OPEN: &str = "ll_open";
    /// Mean log-probability of the answer after the same prompt without passages.
    pub const LL_CLOSED: &str = "ll_closed";
    /// `ll_open - ll_closed`: how much the passages made the answer likelier.
    pub const LL_GAIN: &str = "ll_gain";
    /// ln(1 + the answer's content words).
    pub const ANSWER_WORDS: &str = "answer_words";

    /// Signals that cost a pass of the generator (skipped for questions answered while
    /// others wait, unless `line.rerank_when_busy`).
    pub const COSTLY: [&str; 4] = [RERANK_TOP, LL_OPEN, LL_CLOSED, LL_GAIN];
    /// What `lore calibrate` fits on unless told otherwise: signals that mean the same in
    /// any knowledge base. Left out: BM25 (its scale follows the corpus: fitted on one
    /// SQuAD article it ranked the other's questions backwards, AUROC 0.28 and 0.43), the
    /// fused rank score (ties and list lengths differ), the answer's length and whether
    /// it is a whole span (each flipped between articles), and `ll_closed` (in `ll_gain`).
    /// They are still measured and reported; `--features` fits on any of them.
    pub const TRANSFERABLE: [&str; 8] =
        [COSINE_TOP, COSINE_GAP, RERANK_TOP, SUPPORT, ANSWER_IN_QUOTE, ANSWER_IN_PASSAGES, LL_OPEN, LL_GAIN];
    /// Known before anything is generated.
    pub const BEFORE: [&str; 5] = [COSINE_TOP, COSINE_GAP, BM25_TOP, RETRIEVER_TOP, RERANK_TOP];
}

/// Named measurements of one answer. Absent signals were not measured (no reranker, a
/// model that cannot score, a busy turn).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Signals(pub BTreeMap<String, f64>);

impl Signals {
    pub fn set(&mut self, name: &str, value: f64) {
        if value.is_finite() {
            self.0.insert(name.to_string(), value);
        }
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.get(name).copied()
    }

    /// The retrieval signals of `hits` (best first, after reranking); `retriever_top` is
    /// the retriever's score of its first passage, before any reranker.
    pub fn of_retrieval(hits: &[Hit], retriever_top: Option<f32>, reranked: bool) -> Self {
        let mut s = Self::default();
        let mut similarities: Vec<f32> = hits.iter().filter_map(|h| h.similarity).collect();
        similarities.sort_by(|a, b| b.total_cmp(a));
        let top = similarities.first().copied().unwrap_or(-1.0);
        s.set(signal::COSINE_TOP, top as f64);
        s.set(signal::COSINE_GAP, (top - similarities.get(1).copied().unwrap_or(top.min(0.0))) as f64);
        s.set(signal::BM25_TOP, hits.iter().filter_map(|h| h.lexical).fold(0.0f32, f32::max) as f64);
        s.set(signal::RETRIEVER_TOP, retriever_top.unwrap_or(0.0) as f64);
        if reranked {
            if let Some(first) = hits.first() {
                s.set(signal::RERANK_TOP, first.score as f64);
            }
        }
        s
    }
}

/// When a combiner judges: before generating (retrieval alone) or after (the answer too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Before,
    After,
}

/// Logistic regression over standardised signals: p = 1 / (1 + e^-(w·z + b)), z = (x -
/// mean) / scale. Abstain when p < threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Combiner {
    pub stage: Stage,
    pub features: Vec<String>,
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    pub weights: Vec<f64>,
    pub bias: f64,
    /// Below this probability the answer is withheld.
    pub threshold: f64,
}

impl Combiner {
    /// The probability that the answer is right, when every feature was measured.
    pub fn probability(&self, signals: &Signals) -> Option<f64> {
        let mut z = self.bias;
        for (i, name) in self.features.iter().enumerate() {
            let x = signals.get(name)?;
            z += self.weights[i] * (x - self.mean[i]) / self.scale[i];
        }
        Some(1.0 / (1.0 + (-z).exp()))
    }

    fn check(&self) -> Result<(), String> {
        let n = self.features.len();
        if [self.mean.len(), self.scale.len(), self.weights.len()].iter().any(|&l| l != n) {
            return Err(format!(
                "a {:?} combiner has {n} features but not as many means, scales and weights",
                self.stage
            ));
        }
        if self.scale.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err("a scale is not a positive number".into());
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(format!("threshold {} is not a probability", self.threshold));
        }
        Ok(())
    }
}

/// Which models and chain a calibration was fitted with, so `lore check` can warn when a
/// bot's differ.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FittedWith {
    pub generator: String,
    pub embedder: String,
    #[serde(default)]
    pub reranker_model: Option<String>,
    pub retriever: String,
    pub rerankers: Vec<String>,
    /// What it was fitted on, e.g. "normans.json: 208 questions, 100 off-topic".
    pub data: Vec<String>,
    /// What "right" meant.
    pub label: String,
}

/// A fitted calibration: the file `lore calibrate --out` writes and
/// `retrieval.abstain.calibration` names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Format version.
    pub lore_calibration: u32,
    pub fitted_with: FittedWith,
    pub combiners: Vec<Combiner>,
}

/// A judgement: the probability the answer is right and the threshold it is held to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    pub probability: f64,
    pub threshold: f64,
}

impl Judgement {
    pub fn withholds(&self) -> bool {
        self.probability < self.threshold
    }

    /// One word for people: how sure the answer is.
    pub fn word(&self) -> &'static str {
        if self.probability >= (1.0 + self.threshold) / 2.0 {
            "high"
        } else if self.probability >= self.threshold {
            "medium"
        } else {
            "low"
        }
    }
}

pub const FORMAT: u32 = 1;

impl Calibration {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let calibration: Self = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a calibration written by `lore calibrate`", path.display()))?;
        if calibration.lore_calibration != FORMAT {
            anyhow::bail!(
                "{}: calibration format {} (this Lore reads {FORMAT})",
                path.display(),
                calibration.lore_calibration
            );
        }
        for combiner in &calibration.combiners {
            combiner.check().map_err(|why| anyhow::anyhow!("{}: {why}", path.display()))?;
        }
        Ok(calibration)
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)? + "\n";
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Judges at `stage` with the combiner of that stage that uses the most signals, all
    /// of them measured; `None` when none applies. `threshold` replaces the fitted one.
    pub fn judge(&self, stage: Stage, signals: &Signals, threshold: Option<f64>) -> Option<Judgement> {
        self.combiners
            .iter()
            .filter(|c| c.stage == stage)
            .filter_map(|c| c.probability(signals).map(|p| (c, p)))
            .max_by_key(|(c, _)| c.features.len())
            .map(|(c, probability)| Judgement { probability, threshold: threshold.unwrap_or(c.threshold) })
    }
}

#[cfg(test)]
mod tests {
    use lore_core::Chunk;

    use super::*;

    fn combiner(stage: Stage, features: &[&str], weights: &[f64], threshold: f64) -> Combiner {
        let n = features.len();
        Combiner {
            stage,
            features: features.iter().map(|f| f.to_string()).collect(),
            mean: vec![0.0; n],
            scale: vec![1.0; n],
            weights: weights.to_vec(),
            bias: 0.0,
            threshold,
        }
    }

    fn calibration() -> Calibration {
        Calibration {
            lore_calibration: FORMAT,
            fitted_with: FittedWith::default(),
            combiners: vec![
                combiner(Stage::Before, &[signal::COSINE_TOP], &[4.0], 0.3),
                combiner(Stage::After, &[signal::COSINE_TOP, signal::ANSWER_IN_PASSAGES], &[1.0, 3.0], 0.5),
                combiner(
                    Stage::After,
                    &[signal::COSINE_TOP, signal::ANSWER_IN_PASSAGES, signal::LL_GAIN],
                    &[1.0, 3.0, 2.0],
                    0.6,
                ),
            ],
        }
    }

    #[test]
    fn the_combiner_with_the_most_measured_signals_judges() {
        let c = calibration();
        let mut s = Signals::default();
        s.set(signal::COSINE_TOP, 0.5);
        assert_eq!(c.judge(Stage::After, &s, None), None, "no after-combiner has all its signals");
        let before = c.judge(Stage::Before, &s, None).unwrap();
        assert!((before.probability - 1.0 / (1.0 + (-2.0f64).exp())).abs() < 1e-12);
        s.set(signal::ANSWER_IN_PASSAGES, 1.0);
        assert_eq!(c.judge(Stage::After, &s, None).unwrap().threshold, 0.5, "the cheap combiner");
        s.set(signal::LL_GAIN, 0.5);
        assert_eq!(c.judge(Stage::After, &s, None).unwrap().threshold, 0.6, "the full combiner");
        assert_eq!(c.judge(Stage::After, &s, Some(0.9)).unwrap().threshold, 0.9, "a configured threshold wins");
        s.set(signal::LL_GAIN, f64::NAN);
        assert_eq!(s.get(signal::LL_GAIN), Some(0.5), "a signal that is not a number is not recorded");
    }

    #[test]
    fn more_support_never_lowers_the_probability_with_positive_weights() {
        let c = calibration();
        let mut last = 0.0;
        for i in 0..=10 {
            let mut s = Signals::default();
            s.set(signal::COSINE_TOP, 0.4);
            s.set(signal::ANSWER_IN_PASSAGES, i as f64 / 10.0);
            let p = c.judge(Stage::After, &s, None).unwrap().probability;
            assert!(p > last, "{p} after {last}");
            last = p;
        }
    }

    #[test]
    fn a_calibration_survives_its_file_and_a_broken_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("calibration.json");
        calibration().save(&file).unwrap();
        assert_eq!(Calibration::load(&file).unwrap(), calibration());
        let mut broken = calibration();
        broken.combiners[0].scale = vec![0.0];
        broken.save(&file).unwrap();
        let error = format!("{:#}", Calibration::load(&file).unwrap_err());
        assert!(error.contains("calibration.json") && error.contains("scale"), "{error}");
        std::fs::write(&file, "{}").unwrap();
        let error = format!("{:#}", Calibration::load(&file).unwrap_err());
        assert!(error.contains("not a calibration"), "{error}");
    }

    #[test]
    fn retrieval_signals_read_the_hits() {
        let hit = |similarity: f32, lexical: Option<f32>, score: f32| Hit {
            chunk: Chunk::new("a.md", 0, 1, 1, "text".into()),
            score,
            similarity: Some(similarity),
            lexical,
        };
        let hits = [hit(0.6, Some(7.5), -1.2), hit(0.8, None, -2.0), hit(0.5, Some(3.0), -3.0)];
        let s = Signals::of_retrieval(&hits, Some(0.03), true);
        assert_eq!(s.get(signal::COSINE_TOP), Some(0.8f32 as f64));
        assert!((s.get(signal::COSINE_GAP).unwrap() - 0.2).abs() < 1e-6);
        assert_eq!(s.get(signal::BM25_TOP), Some(7.5));
        assert_eq!(s.get(signal::RERANK_TOP), Some(-1.2f32 as f64));
        let unranked = Signals::of_retrieval(&hits, Some(0.03), false);
        assert_eq!(unranked.get(signal::RERANK_TOP), None);
        let nothing = Signals::of_retrieval(&[], None, false);
        assert_eq!((nothing.get(signal::COSINE_TOP), nothing.get(signal::BM25_TOP)), (Some(-1.0), Some(0.0)));
    }
}
