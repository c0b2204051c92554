//! `lore synth`: question/answer pairs written from a knowledge base, for fine-tuning a
//! model on your own text (question generation and paraphrase augmentation).
//!
//! The generator reads each chunk and writes a question it answers (`prompts/synth.txt`),
//! then answers it from the chunk the way `lore eval` asks for answers (the shortest
//! phrase; "I don't know" drops the pair); `--paraphrases K` asks it to reword each
//! question K times
//! (`prompts/paraphrase.txt`, sampled). Each pair is one JSON line in the chat-messages
//! format fine-tuning tools read (`messages`: system, user = question, assistant =
//! answer), with the question, answer, passage, source and chunk id beside it. A chunk's
//! lines are written together, so a run stopped anywhere resumes after the chunks it
//! finished; with `--split`, every pair of one chunk goes to the same file.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use lore_core::{ChatModel, Chunk, Sampling};
use serde_json::json;

use crate::app::App;
use crate::question::prompt::fill;
use crate::question::single::{
    instruct, question_about, read_question, says_dont_know, short_answer, INSTRUCTION_TOKENS,
};

const PARAPHRASE: &str = include_str!("../../../prompts/paraphrase.txt");

/// The system message of the written conversations: what the fine-tuned model is for.
const TRAINED_SYSTEM: &str = "Answer the question from what you know of the documents.";

#[derive(Debug, Clone, clap::Args)]
pub struct SynthArgs {
    /// The knowledge base to write pairs from.
    #[arg(long)]
    pub kb: String,
    /// The JSONL file to write (appended to: a stopped run resumes). With `--split`,
    /// OUT's name with `.train` and `.validation` before the extension.
    #[arg(long)]
    pub out: PathBuf,
    /// Reworded copies of each question (the same answer).
    #[arg(long, default_value_t = 0)]
    pub paraphrases: usize,
    /// Share of chunks whose pairs go to the training file (e.g. 0.9); the rest to the
    /// validation file.
    #[arg(long)]
    pub split: Option<f64>,
    /// At most this many chunks (in the store's order).
    #[arg(long)]
    pub limit: Option<usize>,
}

/// What a run wrote.
#[derive(Debug, Default, PartialEq)]
pub struct SynthReport {
    pub chunks: usize,
    pub already_done: usize,
    pub pairs: usize,
    /// Chunks for which the model wrote nothing that reads as a question and an answer.
    pub no_pair: usize,
}

impl std::fmt::Display for SynthReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} chunks ({} already done, {} without a usable pair); {} pairs written",
            self.chunks, self.already_done, self.no_pair, self.pairs
        )
    }
}

/// Writes the pairs of knowledge base `args.kb`.
pub async fn run(app: &App, args: &SynthArgs, bar: bool) -> anyhow::Result<SynthReport> {
    if let Some(share) = args.split {
        if !(0.0..=1.0).contains(&share) {
            bail!("--split {share}: give the training share, between 0 and 1 (e.g. 0.9)");
        }
    }
    let kb = app.kb_for_ingest(&args.kb).await?;
    let mut chunks = kb.all_chunks().await?;
    if chunks.is_empty() {
        bail!("knowledge base {:?} has no chunks: run `lore ingest --kb {}` first", args.kb, args.kb);
    }
    chunks.sort_by(|a, b| (&a.source, a.position).cmp(&(&b.source, b.position)));
    chunks.truncate(args.limit.unwrap_or(usize::MAX));
    let files = Files::new(&args.out, args.split)?;
    let done = files.done()?;
    let mut report = SynthReport { chunks: chunks.len(), ..Default::default() };
    let todo: Vec<Chunk> = chunks.into_iter().filter(|c| !done.contains(&c.id)).collect();
    report.already_done = report.chunks - todo.len();
    let model = app.pipeline().model;
    let progress = progress_bar(bar, report.chunks as u64, report.already_done as u64);
    let parallel = app.config.models.generator.parallel().max(1);
    let mut written = futures::stream::iter(todo)
        .map(|chunk| {
            let model = model.clone();
            async move {
                let lines = pairs_of(model, &chunk, args.paraphrases).await;
                (chunk, lines)
            }
        })
        .buffered(parallel);
    while let Some((chunk, lines)) = written.next().await {
        let lines = lines?;
        progress.inc(1);
        if lines.is_empty() {
            report.no_pair += 1;
            continue;
        }
        report.pairs += lines.len();
        files.append(&chunk.id, &lines)?;
        progress.set_message(format!("{} pairs", report.pairs));
    }
    progress.finish_and_clear();
    Ok(report)
}

fn progress_bar(shown: bool, len: u64, done: u64) -> ProgressBar {
    if !shown {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("synth {bar:30} {pos}/{len} chunks  {msg}  eta {eta}").expect("valid template"),
    );
    bar.set_position(done);
    bar
}

/// The JSON lines of one chunk: its question and answer, then the paraphrases; none when
/// the model's reply does not read as a question and an answer.
async fn pairs_of(model: Arc<dyn ChatModel>, chunk: &Chunk, paraphrases: usize) -> anyhow::Result<Vec<String>> {
    let passage = chunk.text.trim();
    // Greedy, with the repeat penalty: small models otherwise loop on "What is the question".
    let Some(question) = question_about(model.as_ref(), passage, Sampling::default()).await? else {
        tracing::debug!(chunk = chunk.id, "no question in the reply");
        return Ok(vec![]);
    };
    // Answered from the chunk alone, as `lore eval` asks for answers.
    let only = [lore_core::Hit { chunk: chunk.clone(), score: 1.0, similarity: None, lexical: None }];
    let answer = short_answer(model.as_ref(), &question, &only, INSTRUCTION_TOKENS, Sampling::default(), None).await?;
    if answer.is_empty() || says_dont_know(&answer) {
        tracing::debug!(chunk = chunk.id, question, answer, "no answer from the passage");
        return Ok(vec![]);
    }
    let mut questions = vec![question.clone()];
    for k in 0..paraphrases {
        // Sampled, with a seed per copy: greedy decoding would write the same words each time.
        let sampling = Sampling { temperature: 0.8, seed: 1 + k as u32, ..Sampling::default() };
        let reworded = instruct(model.as_ref(), &fill(PARAPHRASE, &[("question", &question)]), sampling).await?;
        if let Some(reworded) = read_question(&reworded).filter(|q| !questions.contains(q)) {
            questions.push(reworded);
        }
    }
    let line = |q: &str, paraphrase: bool| {
        json!({
            "messages": [
                {"role": "system", "content": TRAINED_SYSTEM},
                {"role": "user", "content": q},
                {"role": "assistant", "content": answer},
            ],
            "question": q,
            "answer": answer,
            "paraphrase": paraphrase,
            "passage": passage,
            "source": chunk.source,
            "location": chunk.location(),
            "chunk_id": chunk.id,
        })
        .to_string()
    };
    Ok(questions.iter().enumerate().map(|(i, q)| line(q, i > 0)).collect())
}

/// Where pairs go: one file, or a training and a validation file.
struct Files {
    train: PathBuf,
    validation: Option<(PathBuf, f64)>,
}

impl Files {
    fn new(out: &Path, split: Option<f64>) -> anyhow::Result<Self> {
        Ok(match split {
            None => Self { train: out.to_path_buf(), validation: None },
            Some(share) => Self { train: beside(out, "train"), validation: Some((beside(out, "validation"), share)) },
        })
    }

    fn all(&self) -> Vec<&Path> {
        std::iter::once(self.train.as_path()).chain(self.validation.as_ref().map(|(p, _)| p.as_path())).collect()
    }

    /// Chunk ids already written. A last line cut short by a stopped run is removed.
    fn done(&self) -> anyhow::Result<BTreeSet<String>> {
        let mut done = BTreeSet::new();
        for file in self.all() {
            let Ok(text) = std::fs::read_to_string(file) else { continue };
            let complete = text.rfind('\n').map_or(0, |i| i + 1);
            if complete < text.len() {
                let f = std::fs::OpenOptions::new().write(true).open(file)?;
                f.set_len(complete as u64).with_context(|| format!("cannot repair {}", file.display()))?;
            }
            for (n, line) in text[..complete].lines().enumerate() {
                let value: serde_json::Value = serde_json::from_str(line)
                    .with_context(|| format!("{}:{}: not a JSON line written by lore synth", file.display(), n + 1))?;
                if let Some(id) = value["chunk_id"].as_str() {
                    done.insert(id.to_string());
                }
            }
        }
        Ok(done)
    }

    /// Appends one chunk's lines in one write, to the file its id falls in.
    fn append(&self, chunk_id: &str, lines: &[String]) -> anyhow::Result<()> {
        let file = match &self.validation {
            Some((validation, share)) if !in_training_share(chunk_id, *share) => validation,
            _ => &self.train,
        };
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .with_context(|| format!("cannot write {}", file.display()))?;
        f.write_all((lines.join("\n") + "\n").as_bytes()).with_context(|| format!("cannot write {}", file.display()))
    }
}

/// `pairs.jsonl` → `pairs.train.jsonl`.
fn beside(out: &Path, part: &str) -> PathBuf {
    let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("pairs");
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("jsonl");
    out.with_file_name(format!("{stem}.{part}.{ext}"))
}

/// A fixed place for each chunk (its id is a hash), so a resumed run splits alike.
fn in_training_share(chunk_id: &str, share: f64) -> bool {
    let n = chunk_id.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    (n % 10_000) as f64 / 10_000.0 < share
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_files_sit_beside_the_output_and_chunks_keep_their_side() {
        assert_eq!(beside(Path::new("out/pairs.jsonl"), "train"), Path::new("out/pairs.train.jsonl"));
        let ids: Vec<String> = (0..1000).map(|i| format!("chunk{i}")).collect();
        let train = ids.iter().filter(|id| in_training_share(id, 0.9)).count();
        assert!((850..=950).contains(&train), "{train} of 1000");
        assert!(ids.iter().all(|id| in_training_share(id, 0.9) == in_training_share(id, 0.9)));
    }
}
