//! Questions generated at ingest (`generated_questions: N`, question generation,
//! known as doc2query): the generator writes N questions each chunk answers,
//! and they are stored as extra search keys for that chunk (`lore_knowledge::Questions`).
//!
//! Run after the chunks are written: a chunk whose stored questions were asked for with
//! another N (or none, a new chunk) is asked again; the others keep theirs, so an
//! unchanged or moved chunk costs nothing and a stopped run resumes where it stopped. The
//! first question is the model's greedy choice, the others are sampled with a seed each
//! (`prompts/synth.txt`, as `lore synth` asks); repeats, replies that do not read as a
//! question and questions that name nothing of their passage are dropped, so a chunk may
//! keep fewer than N, or none (it is marked as asked all the same). N = 0 drops them all.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use futures::StreamExt;
use lore_core::{ChatModel, Chunk, Embedder, Sampling};
use lore_knowledge::{ChunkQuestions, KnowledgeBase};

use super::{progress_bar, Progress};

/// Chunks whose questions are embedded and written per commit.
const BATCH: usize = 64;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct QuestionReport {
    /// Chunks that were asked for questions this time.
    pub chunks_asked: usize,
    pub questions: usize,
    /// Chunks for which the model wrote no usable question (not asked again until they
    /// change or N does).
    pub chunks_without: usize,
    /// The setting is 0 and earlier questions were dropped.
    pub dropped: bool,
    pub seconds: f64,
}

impl std::fmt::Display for QuestionReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.dropped {
            return write!(f, "generated questions dropped (generated_questions is 0)");
        }
        write!(f, "{} questions generated for {} chunks", self.questions, self.chunks_asked)?;
        if self.chunks_without > 0 {
            write!(f, " ({} without a usable question)", self.chunks_without)?;
        }
        if self.chunks_asked > 0 {
            write!(f, " in {:.1}s, {:.2}s per chunk", self.seconds, self.seconds / self.chunks_asked as f64)?;
        }
        Ok(())
    }
}

/// Brings knowledge base `kb`'s generated questions to `wanted` per chunk. `model` may be
/// `None` only when `wanted` is 0; `parallel` chunks are asked at once.
pub async fn refresh(
    kb: &KnowledgeBase,
    wanted: u32,
    model: Option<Arc<dyn ChatModel>>,
    embedder: &dyn Embedder,
    parallel: usize,
    progress: Progress,
) -> anyhow::Result<QuestionReport> {
    let started = Instant::now();
    let mut report = QuestionReport::default();
    if wanted == 0 {
        report.dropped = kb.questions().drop_all().await?;
        return Ok(report);
    }
    let model = model.context("generated_questions needs the generator loaded")?;
    let stored = kb.questions().stored().await?;
    let todo: Vec<Chunk> =
        kb.all_chunks().await?.into_iter().filter(|c| stored.get(&c.id).map(|s| s.wanted) != Some(wanted)).collect();
    let bar = progress_bar(progress, todo.len(), "chunks asked for questions");
    let mut asked = futures::stream::iter(todo)
        .map(|chunk| {
            let model = model.clone();
            async move {
                let questions = questions_about(model.as_ref(), &chunk.text, wanted).await;
                (chunk.id, questions)
            }
        })
        .buffered(parallel.max(1));
    let mut pending: Vec<(String, Vec<String>)> = Vec::new();
    let mut changed = false;
    while let Some((chunk_id, questions)) = asked.next().await {
        let questions = match questions {
            Ok(questions) => questions,
            Err(e) => {
                // Keep what was generated: the next run asks only the rest.
                drop(asked);
                write(kb, wanted, embedder, pending).await?;
                return Err(e.context("generating questions stopped"));
            }
        };
        bar.inc(1);
        report.chunks_asked += 1;
        report.questions += questions.len();
        report.chunks_without += usize::from(questions.is_empty());
        pending.push((chunk_id, questions));
        if pending.len() >= BATCH {
            write(kb, wanted, embedder, std::mem::take(&mut pending)).await?;
            changed = true;
        }
    }
    if !pending.is_empty() {
        write(kb, wanted, embedder, pending).await?;
        changed = true;
    }
    bar.finish_and_clear();
    kb.questions().refresh_indexes(changed).await?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Up to `wanted` different questions the passage answers.
async fn questions_about(model: &dyn ChatModel, passage: &str, wanted: u32) -> anyhow::Result<Vec<String>> {
    let mut questions: Vec<String> = Vec::new();
    for i in 0..wanted {
        // Greedy first; then sampled with a seed each, or every question would be the same.
        let sampling = match i {
            0 => Sampling::default(),
            _ => Sampling { temperature: 0.8, seed: i, ..Sampling::default() },
        };
        let Some(q) = crate::question::single::question_about(model, passage.trim(), sampling).await? else {
            continue;
        };
        if !grounded(&q, passage) {
            tracing::debug!(question = q, "the question names nothing of its passage");
        } else if !questions.iter().any(|known| known.eq_ignore_ascii_case(&q)) {
            questions.push(q);
        }
    }
    Ok(questions)
}

/// Whether `question` names at least two things of its passage (words of four letters or
/// more that the passage has, or numbers). A question that does not ("What might that
/// be?", "What is the name of the person?") would lead every question of that form to
/// this chunk: small models write many.
fn grounded(question: &str, passage: &str) -> bool {
    let words = |text: &str| -> std::collections::BTreeSet<String> {
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.chars().count() >= 4 || w.chars().all(|c| c.is_ascii_digit()) && !w.is_empty())
            .map(str::to_lowercase)
            .filter(|w| !COMMON.contains(&w.as_str()))
            .collect()
    };
    words(question).intersection(&words(passage)).count() >= 2
}

/// Words of four letters or more that questions share with any passage.
const COMMON: [&str; 24] = [
    "what", "which", "when", "where", "whom", "whose", "that", "this", "these", "those", "with", "from", "have",
    "been", "were", "does", "name", "passage", "about", "there", "their", "they", "would", "could",
];

async fn write(
    kb: &KnowledgeBase,
    wanted: u32,
    embedder: &dyn Embedder,
    chunks: Vec<(String, Vec<String>)>,
) -> anyhow::Result<()> {
    let texts: Vec<String> = chunks.iter().flat_map(|(_, qs)| qs.iter().cloned()).collect();
    let mut vectors = if texts.is_empty() { vec![] } else { embedder.embed(&texts).await? }.into_iter();
    let rows: Vec<ChunkQuestions> = chunks
        .into_iter()
        .map(|(chunk_id, qs)| ChunkQuestions {
            chunk_id,
            questions: qs.into_iter().map(|q| (q, vectors.next().expect("a vector per question"))).collect(),
        })
        .collect();
    kb.questions().replace(wanted, &rows).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::grounded;

    #[test]
    fn a_question_must_name_things_of_its_passage() {
        let passage = "Rollo's Vikings settled in Normandy in 911 and married Frankish women.";
        assert!(grounded("Where did Rollo's Vikings settle?", passage));
        assert!(grounded("In what year did the Vikings settle in Normandy?", passage));
        assert!(grounded("What happened in 911 to Rollo?", passage));
        assert!(!grounded("What is the name of the person in the passage?", passage));
        assert!(!grounded("What might that be?", passage));
        assert!(!grounded("Who settled there?", passage), "one thing is not enough");
    }
}
