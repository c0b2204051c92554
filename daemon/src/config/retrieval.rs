//! `retrieval:`: how passages are found, reranked and judged, and what is said when the
//! knowledge base does not answer; the defaults every bot and channel may override.

use std::path::PathBuf;

use lore_knowledge::{Language, RerankerConfig, RetrieverConfig};
use serde::Deserialize;

use super::{Config, ConfigError, Source};

/// The `retrieval:` section, and a bot's or channel's settings once merged over it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retrieval {
    /// How candidates are found: `vector`, `fulltext` or `hybrid`.
    #[serde(default)]
    pub retriever: RetrieverConfig,
    /// Applied in order after retrieval.
    #[serde(default = "default_rerankers")]
    pub rerankers: Vec<RerankerConfig>,
    /// Candidates fetched from the knowledge base.
    #[serde(default = "default_top_k_chunks")]
    pub top_k: usize,
    /// Passages put in front of the question (at most; fewer if the context is short).
    #[serde(default = "default_passages")]
    pub passages: usize,
    /// If no retrieved passage's cosine similarity to the question reaches this, answer
    /// `abstain_text` without calling the generator. Every retriever measures the same
    /// cosine similarity (the full-text one embeds the question for it), so the threshold
    /// means the same whichever is chosen. A floor under `abstain.calibration` too.
    #[serde(default = "default_min_score")]
    pub min_score: f32,
    /// When to withhold an answer, judged by a calibration fitted on labelled questions
    /// (`lore calibrate`) instead of `min_score` alone.
    #[serde(default)]
    pub abstain: Abstain,
    /// What the bot says when it abstains. Left out, the built-in one in the bot's
    /// language (`bots.NAME.language`, else its knowledge base's).
    #[serde(default = "default_abstain_text")]
    pub abstain_text: String,
    /// Said after `abstain_text`, pointing to the nearest thing the knowledge base covers
    /// so the person can rephrase: `{topic}` is the closest passage's section (else its
    /// first words), `{source}` its source. Empty: no hint.
    #[serde(default = "default_abstain_hint")]
    pub abstain_hint: String,
    /// Quote under each answer the one sentence of its passages that best supports it.
    #[serde(default)]
    pub quote_evidence: bool,
    /// `generate` (the model answers), `quote` (the sentence of the passages that best
    /// answers the question is the answer; no generation) or `verified` (the model
    /// answers, and the answer is shown only when a sentence of the passages, quoted
    /// under it, holds what it says; else `abstain.instead`).
    #[serde(default)]
    pub answer_style: AnswerStyle,
}

/// `retrieval.abstain`: the calibrated "I don't know".
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Abstain {
    /// A calibration file written by `lore calibrate` (relative to this file). Each answer
    /// then gets a probability of being right, from retrieval, reranking, how well the
    /// passages support the answer and how much they made it likelier; below the
    /// calibration's threshold it is withheld. Not set: `min_score` alone decides.
    #[serde(default)]
    pub calibration: Option<PathBuf>,
    /// A probability to hold answers to instead of the calibration's own threshold
    /// (higher: fewer answers, more of them right).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// What is said in place of a withheld answer: `abstain` (`abstain_text` and the hint)
    /// or `quote` (the sentence of the passages that best answers the question, marked
    /// as a quote, when one verifies; else `abstain`).
    #[serde(default)]
    pub instead: Instead,
    /// End each judged chat answer with how sure it is: "(confidence: high)".
    #[serde(default)]
    pub show_confidence: bool,
}

impl Abstain {
    /// The calibration file, if named, expanded (`key` is this section's).
    pub(super) fn expand_paths(&mut self, key: &str, source: &Source) -> Result<(), ConfigError> {
        if let Some(file) = &mut self.calibration {
            *file = source.expand(file, &format!("{key}.calibration"))?;
        }
        Ok(())
    }
}

/// What stands in for a withheld answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Instead {
    /// `abstain_text` and the hint.
    #[default]
    Abstain,
    /// The best verified sentence of the passages, as a quote.
    Quote,
}

/// How an answer is made from the passages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AnswerStyle {
    /// The model answers.
    #[default]
    Generate,
    /// The best sentence of the passages is the answer; no generation.
    Quote,
    /// The model answers, shown only when a quoted sentence of the passages holds it.
    Verified,
}

impl Default for Retrieval {
    fn default() -> Self {
        Self {
            retriever: RetrieverConfig::default(),
            rerankers: default_rerankers(),
            top_k: default_top_k_chunks(),
            passages: default_passages(),
            min_score: default_min_score(),
            abstain: Abstain::default(),
            abstain_text: default_abstain_text(),
            abstain_hint: default_abstain_hint(),
            quote_evidence: false,
            answer_style: AnswerStyle::default(),
        }
    }
}

fn default_rerankers() -> Vec<RerankerConfig> {
    vec![RerankerConfig::Llm { candidates: 12 }]
}
fn default_top_k_chunks() -> usize {
    12
}
fn default_passages() -> usize {
    1
}
fn default_min_score() -> f32 {
    0.30
}
/// The built-in "I don't know" and its hint, each as (English, Hebrew).
const ABSTAIN_TEXTS: (&str, &str) =
    ("I don't know: the knowledge base does not seem to cover that.", include_str!("../../../prompts/he/abstain.txt"));
const ABSTAIN_HINTS: (&str, &str) = (
    "The nearest it comes is {topic} ({source}); try asking about that.",
    include_str!("../../../prompts/he/abstain-hint.txt"),
);

fn default_abstain_text() -> String {
    ABSTAIN_TEXTS.0.into()
}
fn default_abstain_hint() -> String {
    ABSTAIN_HINTS.0.into()
}

/// `text` for a bot speaking `language`: a built-in text becomes that language's; one
/// written in the config stays as written.
fn built_in_in(text: &str, pair: (&str, &str), language: Language) -> String {
    if text.trim() != pair.0.trim() && text.trim() != pair.1.trim() {
        return text.to_string();
    }
    match language {
        Language::English => pair.0.trim().to_string(),
        Language::Hebrew => pair.1.trim().to_string(),
    }
}

impl Retrieval {
    /// These settings for a bot speaking `language`: the built-in `abstain_text` and
    /// `abstain_hint` in that language (those written in the config stay as written).
    pub fn in_language(&self, language: Language) -> Retrieval {
        Retrieval {
            abstain_text: built_in_in(&self.abstain_text, ABSTAIN_TEXTS, language),
            abstain_hint: built_in_in(&self.abstain_hint, ABSTAIN_HINTS, language),
            ..self.clone()
        }
    }
}

/// Retrieval settings a bot or channel may override; unset keys inherit.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalOverride {
    /// Replaces `retrieval.retriever`.
    pub retriever: Option<RetrieverConfig>,
    /// Replaces the whole `retrieval.rerankers` chain (`[]` = none).
    pub rerankers: Option<Vec<RerankerConfig>>,
    /// Replaces `retrieval.top_k`.
    pub top_k: Option<usize>,
    /// Replaces `retrieval.passages`.
    pub passages: Option<usize>,
    /// Replaces `retrieval.min_score`.
    pub min_score: Option<f32>,
    /// Replaces `retrieval.abstain` as a whole.
    pub abstain: Option<Abstain>,
    /// Replaces `retrieval.abstain_text`.
    pub abstain_text: Option<String>,
    /// Replaces `retrieval.abstain_hint`.
    pub abstain_hint: Option<String>,
    /// Replaces `retrieval.quote_evidence`.
    pub quote_evidence: Option<bool>,
    /// Replaces `retrieval.answer_style`.
    pub answer_style: Option<AnswerStyle>,
}

impl RetrievalOverride {
    /// The calibration file of its `abstain`, if it names one, expanded (`key` is this
    /// section's).
    pub(super) fn expand_paths(&mut self, key: &str, source: &Source) -> Result<(), ConfigError> {
        match &mut self.abstain {
            Some(abstain) => abstain.expand_paths(&format!("{key}.abstain"), source),
            None => Ok(()),
        }
    }
}

impl Retrieval {
    /// These settings with `o`'s over them.
    pub fn with(&self, o: &RetrievalOverride) -> Retrieval {
        Retrieval {
            retriever: o.retriever.clone().unwrap_or_else(|| self.retriever.clone()),
            rerankers: o.rerankers.clone().unwrap_or_else(|| self.rerankers.clone()),
            top_k: o.top_k.unwrap_or(self.top_k),
            passages: o.passages.unwrap_or(self.passages),
            min_score: o.min_score.unwrap_or(self.min_score),
            abstain: o.abstain.clone().unwrap_or_else(|| self.abstain.clone()),
            abstain_text: o.abstain_text.clone().unwrap_or_else(|| self.abstain_text.clone()),
            abstain_hint: o.abstain_hint.clone().unwrap_or_else(|| self.abstain_hint.clone()),
            quote_evidence: o.quote_evidence.unwrap_or(self.quote_evidence),
            answer_style: o.answer_style.unwrap_or(self.answer_style),
        }
    }
}

impl Config {
    /// Every `abstain` section with its key: the top-level one, then each bot's and
    /// channel's that sets one.
    pub fn abstain_settings(&self) -> Vec<(String, &Abstain)> {
        let mut out = vec![("retrieval.abstain".to_string(), &self.retrieval.abstain)];
        for (name, bot) in &self.bots {
            if let Some(a) = &bot.retrieval.abstain {
                out.push((format!("bots.{name}.retrieval.abstain"), a));
            }
            for (id, channel) in &bot.channels {
                if let Some(a) = &channel.retrieval.abstain {
                    out.push((format!("bots.{name}.channels.{id}.retrieval.abstain"), a));
                }
            }
        }
        out
    }

    /// The most candidates any `llm` reranker of any bot or channel scores.
    pub fn most_llm_candidates(&self) -> usize {
        let bots = self.bots.values();
        let overrides =
            bots.flat_map(|b| std::iter::once(&b.retrieval).chain(b.channels.values().map(|c| &c.retrieval)));
        overrides
            .filter_map(|o| o.rerankers.as_ref())
            .chain(std::iter::once(&self.retrieval.rerankers))
            .flatten()
            .filter_map(|r| match r {
                RerankerConfig::Llm { candidates } => Some(*candidates),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// `retrieval`: its rerankers have their models, and every `abstain.threshold`
    /// (bots' and channels' too) is a probability.
    pub(super) fn check_retrieval(&self) -> Result<(), ConfigError> {
        self.check_rerankers("retrieval.rerankers", &self.retrieval.rerankers)?;
        for (key, abstain) in self.abstain_settings() {
            if let Some(t) = abstain.threshold.filter(|t| !(0.0..=1.0).contains(t)) {
                return Err(self.error(&format!("{key}.threshold"), format!("{t} is not a probability (from 0 to 1)")));
            }
        }
        Ok(())
    }

    /// A chain of rerankers (at `key`) whose models are configured.
    pub(super) fn check_rerankers(&self, key: &str, rerankers: &[RerankerConfig]) -> Result<(), ConfigError> {
        for (i, r) in rerankers.iter().enumerate() {
            if matches!(r, RerankerConfig::CrossEncoder { .. }) && self.models.reranker.is_none() {
                return Err(self.error(
                    &format!("{key}.{i}"),
                    "the cross-encoder reranker needs a reranking model: add `models.reranker.path` (a bge-reranker GGUF, for instance)",
                ));
            }
        }
        Ok(())
    }
}
