//! Ingest: files -> chunks -> embeddings -> one LanceDB commit per run.
//!
//! Unchanged files (same chunk ids as stored) are skipped without embedding; changed files
//! are re-embedded and replace their old chunks; files gone from an ingested folder lose
//! theirs. Nothing is written when nothing changed.

pub mod chunk;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use lore_core::{Chunk, Embedder};
use lore_engine::LlamaEmbedder;
use lore_plugins::KnowledgeBase;

use crate::config::Chunking;

/// File types ingest reads.
pub const EXTENSIONS: [&str; 3] = ["txt", "md", "markdown"];

#[derive(Debug, Default, Clone, PartialEq)]
pub struct IngestReport {
    pub files: usize,
    pub unchanged_files: usize,
    pub changed_files: usize,
    pub removed_files: usize,
    pub chunks_embedded: usize,
    pub chunks_added: usize,
    pub chunks_removed: usize,
    pub seconds: f64,
}

impl std::fmt::Display for IngestReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} files ({} unchanged, {} changed, {} removed); {} chunks embedded, {} added, {} removed in {:.1}s",
            self.files,
            self.unchanged_files,
            self.changed_files,
            self.removed_files,
            self.chunks_embedded,
            self.chunks_added,
            self.chunks_removed,
            self.seconds
        )
    }
}

/// Whether ingest draws a progress bar on the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Bar,
    Quiet,
}

/// Ingests every supported file under `roots` into `kb`.
pub async fn ingest(
    kb: &KnowledgeBase,
    embedder: &LlamaEmbedder,
    roots: &[PathBuf],
    chunking: &Chunking,
    progress: Progress,
) -> anyhow::Result<IngestReport> {
    let started = Instant::now();
    let roots: Vec<PathBuf> = roots
        .iter()
        .map(|r| std::fs::canonicalize(r).with_context(|| format!("cannot read {}", r.display())))
        .collect::<anyhow::Result<_>>()?;
    let files = collect_files(&roots)?;
    let stored = kb.stored_ids().await?;
    let mut report = IngestReport { files: files.len(), ..Default::default() };

    // Read and chunk everything first: a bad file stops the run before anything is written.
    let count = |s: &str| embedder.count_tokens(s).saturating_sub(2);
    let mut changed: Vec<Chunk> = Vec::new();
    let mut touched: Vec<String> = Vec::new();
    for file in &files {
        let source = file.display().to_string();
        let text = read_text(file)?;
        let pieces = chunk::chunk(&text, chunking, &count);
        let chunks: Vec<Chunk> = pieces
            .into_iter()
            .enumerate()
            .map(|(i, p)| Chunk::new(&source, i as u32, p.line_start, p.line_end, p.text))
            .collect();
        let ids: BTreeSet<String> = chunks.iter().map(|c| c.id.clone()).collect();
        if stored.get(&source) == Some(&ids) {
            report.unchanged_files += 1;
            continue;
        }
        report.changed_files += 1;
        touched.push(source);
        changed.extend(chunks);
    }
    let present: BTreeSet<String> = files.iter().map(|f| f.display().to_string()).collect();
    for source in stored.keys() {
        let under_root = roots.iter().any(|r| Path::new(source).starts_with(r));
        if under_root && !present.contains(source) {
            report.removed_files += 1;
            touched.push(source.clone());
        }
    }

    let vectors = embed_with_progress(embedder, &changed, progress).await?;
    report.chunks_embedded = changed.len();
    let rows: Vec<(Chunk, Vec<f32>)> = changed.into_iter().zip(vectors).collect();
    let written = kb.replace_sources(&rows, &touched).await?;
    report.chunks_added = written.added;
    report.chunks_removed = written.removed;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

async fn embed_with_progress(
    embedder: &LlamaEmbedder,
    chunks: &[Chunk],
    progress: Progress,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let bar = if progress == Progress::Bar && !chunks.is_empty() {
        let bar = ProgressBar::new(chunks.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("embedding {bar:30} {pos}/{len} chunks  {per_sec}  eta {eta}")
                .expect("valid template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut out = Vec::with_capacity(chunks.len());
    // Groups large enough to fill the embedder's micro-batches, small enough to show progress.
    for group in chunks.chunks(32) {
        let texts: Vec<String> = group.iter().map(|c| c.text.clone()).collect();
        out.extend(embedder.embed(&texts).await?);
        bar.inc(group.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Every supported file under `roots`, sorted. A file named directly must be supported.
pub fn collect_files(roots: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = BTreeSet::new();
    for root in roots {
        if root.is_file() {
            if !supported(root) {
                bail!(
                    "{}: lore cannot ingest this file type yet (supported: {})",
                    root.display(),
                    EXTENSIONS.map(|e| format!(".{e}")).join(", ")
                );
            }
            out.insert(root.clone());
        } else {
            walk(root, &mut out)?;
        }
    }
    Ok(out.into_iter().collect())
}

fn walk(dir: &Path, out: &mut BTreeSet<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read folder {}", dir.display()))? {
        let path = entry?.path();
        let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else if supported(&path) {
            out.insert(path);
        }
    }
    Ok(())
}

fn supported(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Reads a UTF-8 text file; an encoding error names the file, line and byte.
fn read_text(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    match String::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            bail!(
                "{}:{line}: not valid UTF-8 at byte {at}; save the file as UTF-8 and ingest again (nothing was written)",
                path.display()
            )
        }
    }
}
