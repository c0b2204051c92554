//! Quoted evidence, the guide's extractive reader: the one sentence of the passages shown
//! to the model that best supports an answer, quoted under it so people can check it
//! (`retrieval.quote_evidence`), or given as the answer itself (`answer_style: quote`, for
//! models too small to answer well). Sentences are scored against the question (and the
//! answer, when there is one) by the cross-encoder when `models.reranker` is loaded, else
//! by the embedder's cosine similarity.

use std::sync::Arc;

use lore_core::{cosine, Embedder, Hit, PairScorer, PluginContext};
use unicode_segmentation::UnicodeSegmentation;

/// A sentence quoted from passage `passage` (numbered from 1, as in the prompt and the
/// sources).
#[derive(Debug, Clone, PartialEq)]
pub struct Quote {
    pub sentence: String,
    pub passage: usize,
}

impl Quote {
    /// The line shown under an answer.
    pub fn shown(&self) -> String {
        format!("Evidence [{}]: “{}”", self.passage, self.sentence)
    }
}

/// Chooses the sentence; shared by every bot (the models are the daemon's).
#[derive(Clone)]
pub struct EvidenceFinder {
    embedder: Arc<dyn Embedder>,
    cross_encoder: Option<Arc<dyn PairScorer>>,
}

impl EvidenceFinder {
    pub fn new(cx: &PluginContext) -> Self {
        Self { embedder: cx.embedder.clone(), cross_encoder: cx.cross_encoder.clone() }
    }

    /// The sentence of `passages` that best supports `answer` to `question` (or answers
    /// `question`, when `answer` is `None`); `None` when the passages hold no sentence.
    pub async fn best(&self, question: &str, answer: Option<&str>, passages: &[Hit]) -> anyhow::Result<Option<Quote>> {
        let candidates: Vec<(usize, String)> = passages
            .iter()
            .enumerate()
            .flat_map(|(i, h)| sentences(&h.chunk.text).into_iter().map(move |s| (i + 1, s)))
            .collect();
        if candidates.is_empty() {
            return Ok(None);
        }
        let claim = match answer {
            Some(answer) => format!("{question} {answer}"),
            None => question.to_string(),
        };
        let texts: Vec<String> = candidates.iter().map(|(_, s)| s.clone()).collect();
        let scores = match &self.cross_encoder {
            Some(cross) => cross.score_pairs(&claim, &texts).await?,
            None => {
                let mut all = vec![claim];
                all.extend(texts);
                let vectors = self.embedder.embed(&all).await?;
                vectors[1..].iter().map(|v| cosine(&vectors[0], v)).collect()
            }
        };
        let best = scores.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).expect("candidates");
        let (passage, sentence) = candidates.into_iter().nth(best).expect("a candidate per score");
        Ok(Some(Quote { sentence, passage }))
    }
}

/// The sentences of a passage worth quoting: split at line breaks and sentence ends;
/// headings and fragments of fewer than four words left out.
pub fn sentences(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .flat_map(|line| line.unicode_sentences().map(|s| s.trim().to_string()).collect::<Vec<_>>())
        .filter(|s| s.split_whitespace().count() >= 4)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_leave_out_headings_and_fragments() {
        let text = "# Leave\n\nCall your manager before nine. Then rest!\nUp to five days carry over into next year.";
        assert_eq!(sentences(text), ["Call your manager before nine.", "Up to five days carry over into next year."]);
    }
}
