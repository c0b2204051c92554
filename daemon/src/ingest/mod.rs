//! Ingest: files or web pages -> chunks -> embeddings -> LanceDB, in batches.
//!
//! Unchanged files (same chunk ids and places as stored) are skipped without embedding;
//! changed files get their new chunks embedded, their moved chunks' places updated, and
//! their old chunks deleted; files gone from an ingested folder lose theirs. Nothing is
//! written when nothing changed.
//!
//! Crash safety: new and moved chunks are written first, [`BATCH_CHUNKS`] at a time (so
//! memory stays bounded), and deletions come last. Wherever a run stops, the previous
//! content is still stored; a rerun finds the chunks already written (ids are hashes of
//! source and text), writes the rest, deletes what is stale and rebuilds the full-text
//! index that the interrupted run did not get to.

pub mod addresses;
pub mod chunk;
pub mod files;
pub mod questions;
pub mod sandbox;
pub mod web;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lore_core::{Chunk, Embedder};
use lore_documents::Block;
use lore_knowledge::{ChunkPlace, KnowledgeBase, Language, LanguageChoice};

use crate::config::{Chunking, Config};
pub use files::{collect_files, SkipReason, Skipped};

/// Chunks embedded and written per commit: bounded memory on any folder, and an
/// interrupted run keeps what it wrote.
pub const BATCH_CHUNKS: usize = 256;

/// How one knowledge base's files are read and cut.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub chunking: Chunking,
    /// Larger files (and pages) are skipped with a warning.
    pub max_file_bytes: u64,
    pub web: web::WebSettings,
    /// Questions the generator writes per chunk as extra search keys (0: none).
    pub generated_questions: u32,
    /// What one document's parse may take (the config's `parsing:`).
    pub parsing: crate::config::ParsingLimits,
    /// The knowledge base's language, or `auto`: detected from the first chunks written
    /// when none is stored yet.
    pub language: LanguageChoice,
}

impl Settings {
    /// `chunking` with the default file-size limit and web settings.
    pub fn new(chunking: &Chunking) -> Self {
        Self {
            chunking: chunking.clone(),
            max_file_bytes: crate::config::DEFAULT_MAX_FILE_BYTES,
            web: web::WebSettings::default(),
            generated_questions: 0,
            parsing: crate::config::ParsingLimits::default(),
            language: LanguageChoice::Auto,
        }
    }

    /// The settings of knowledge base `kb`: its own where configured, else the defaults.
    /// Its fetched pages are remembered in `state_dir/web/KB.json`.
    pub fn for_kb(config: &Config, kb: &str) -> Self {
        let mut settings = Self::new(config.chunking_for(kb));
        settings.parsing = config.parsing.clone();
        if let Some(k) = config.knowledge_bases.get(kb) {
            settings.max_file_bytes = k.max_file_bytes;
            settings.web.crawl = k.crawl;
            settings.web.max_pages = k.max_pages;
            settings.web.delay = std::time::Duration::from_millis(k.crawl_delay_ms);
            settings.web.guard.allow_private = k.allow_private_addresses;
            settings.generated_questions = k.generated_questions;
            settings.language = k.language;
        }
        settings.web.cache = Some(config.state_dir.join("web").join(format!("{kb}.json")));
        settings
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct IngestReport {
    pub files: usize,
    pub unchanged_files: usize,
    pub changed_files: usize,
    pub removed_files: usize,
    pub chunks_embedded: usize,
    pub chunks_added: usize,
    /// Unchanged chunks whose position or lines changed (text inserted above them).
    pub chunks_moved: usize,
    pub chunks_removed: usize,
    /// Files, folders and links left out, each with its warning.
    pub skipped: Vec<Skipped>,
    pub seconds: f64,
    /// Web pages, not files, were ingested (the summary counts pages).
    pub web: bool,
}

impl IngestReport {
    /// "2 too large, 1 binary", or "" when nothing was skipped.
    fn skipped_by_reason(&self) -> String {
        let mut counts: BTreeMap<SkipReason, usize> = BTreeMap::new();
        for s in &self.skipped {
            *counts.entry(s.reason).or_default() += 1;
        }
        counts.iter().map(|(reason, n)| format!("{n} {reason}")).collect::<Vec<_>>().join(", ")
    }
}

impl std::fmt::Display for IngestReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} ({} unchanged, {} changed, {} removed",
            self.files,
            if self.web { "pages" } else { "files" },
            self.unchanged_files,
            self.changed_files,
            self.removed_files
        )?;
        if !self.skipped.is_empty() {
            write!(f, ", {} skipped: {}", self.skipped.len(), self.skipped_by_reason())?;
        }
        write!(
            f,
            "); {} chunks embedded, {} added, {} moved, {} removed in {:.1}s",
            self.chunks_embedded, self.chunks_added, self.chunks_moved, self.chunks_removed, self.seconds
        )
    }
}

/// Whether ingest draws a progress bar on the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Bar,
    Quiet,
}

/// Ingests every supported file under `roots` into `kb`. A root that does not exist or
/// an unsupported file named directly is an error; a file that cannot be read as text is
/// skipped with a warning (see [`IngestReport::skipped`]) and keeps what was stored of it.
pub async fn ingest(
    kb: &KnowledgeBase,
    embedder: &dyn Embedder,
    roots: &[PathBuf],
    settings: &Settings,
    progress: Progress,
) -> anyhow::Result<IngestReport> {
    let sandbox = sandbox::Sandbox::locate(&settings.parsing)?;
    let roots: Vec<PathBuf> = roots
        .iter()
        .map(|r| std::fs::canonicalize(r).with_context(|| format!("cannot read {}", r.display())))
        .collect::<anyhow::Result<_>>()?;
    let found = collect_files(&roots)?;
    let mut run = Run::start(kb, embedder, settings, progress_bar(progress, found.files.len(), "files")).await?;
    run.report.files = found.files.len();
    for skipped in found.skipped {
        run.skip(skipped);
    }
    for file in &found.files {
        run.bar.inc(1);
        match files::read_blocks(file, settings.max_file_bytes, &sandbox).await {
            Ok(blocks) => run.document(&file.display().to_string(), &blocks).await?,
            Err(skipped) => run.skip(skipped),
        }
    }
    let removed = removed_sources(&run.stored, &roots, &found.files, &run.report.skipped);
    run.finish(removed).await
}

/// Ingests web pages: each of `pages`, and with `settings.web.crawl` the pages below each
/// on its host (see [`web`]). A page that cannot be fetched or read is skipped with a
/// warning and keeps what was stored of it; one the server says is gone loses its chunks,
/// and so does a stored page a complete crawl no longer reaches.
pub async fn ingest_web(
    kb: &KnowledgeBase,
    embedder: &dyn Embedder,
    pages: &[url::Url],
    settings: &Settings,
    progress: Progress,
) -> anyhow::Result<IngestReport> {
    let sandbox = sandbox::Sandbox::locate(&settings.parsing)?;
    let mut run = Run::start(kb, embedder, settings, progress_bar(progress, pages.len(), "pages")).await?;
    run.report.web = true;
    let mut cache = web::PageCache::load(settings.web.cache.as_deref(), format!("{:?}", settings.chunking));
    let stored: BTreeSet<String> = run.stored.keys().cloned().collect();
    let is_stored = |source: &str| stored.contains(source);
    let mut removed = Vec::new();
    let mut reached = BTreeSet::new();
    let mut complete_scopes = Vec::new();
    let mut known = 0;
    for start in pages {
        let crawler = web::Crawler::start(start, &settings.web, settings.max_file_bytes, &sandbox, &is_stored).await;
        let mut crawler = match crawler {
            Ok(crawler) => crawler,
            Err(e) => {
                run.skip(Skipped::new(Path::new(start.as_str()), SkipReason::Unreachable, format!("{e:#}")));
                continue;
            }
        };
        while let Some(page) = crawler.next(&mut cache).await {
            run.bar.set_length((known + crawler.known()) as u64);
            run.bar.inc(1);
            run.report.files += 1;
            reached.insert(page.url.clone());
            match page.outcome {
                web::Outcome::Changed(blocks) => run.document(&page.url, &blocks).await?,
                web::Outcome::Unchanged => run.report.unchanged_files += 1,
                web::Outcome::Gone => removed.push(page.url),
                web::Outcome::Skipped(skipped) => {
                    // A copy stored earlier (before its address began serving the same page).
                    if skipped.reason == SkipReason::Duplicate {
                        removed.push(page.url);
                    }
                    run.skip(skipped);
                }
            }
        }
        known += crawler.known();
        if crawler.complete() {
            complete_scopes.push(crawler);
        }
    }
    // After every start page: one may reach what another's crawl did not.
    for crawler in &complete_scopes {
        removed.extend(stored.iter().filter(|s| crawler.in_scope(s) && !reached.contains(*s)).cloned());
    }
    removed.retain(|source| stored.contains(source));
    removed.sort();
    removed.dedup();
    let report = run.finish(removed).await?;
    // Only now: validators remembered for pages whose chunks were not written would make
    // the next run skip them.
    cache.save()?;
    Ok(report)
}

/// One ingest's writes: each document's chunks planned against what is stored and written
/// in batches, and its totals.
struct Run<'a> {
    kb: &'a KnowledgeBase,
    embedder: &'a dyn Embedder,
    chunking: &'a Chunking,
    stored: BTreeMap<String, BTreeMap<String, ChunkPlace>>,
    writer: Writer<'a>,
    stale: Vec<String>,
    report: IngestReport,
    bar: ProgressBar,
    started: Instant,
}

impl<'a> Run<'a> {
    async fn start(
        kb: &'a KnowledgeBase,
        embedder: &'a dyn Embedder,
        settings: &'a Settings,
        bar: ProgressBar,
    ) -> anyhow::Result<Run<'a>> {
        // Before anything is written: a changed language re-indexes what is stored, and the
        // chunks written next get their words in it.
        let detect = match settings.language {
            LanguageChoice::Fixed(language) => {
                if kb.set_language(language).await? {
                    tracing::info!(kb = kb.name(), %language, "knowledge base language set");
                }
                false
            }
            // A knowledge base that holds chunks but no language was made before languages
            // were kept: it was searched as English, and one new file must not turn it.
            LanguageChoice::Auto if kb.language().await?.is_none() && kb.count().await? > 0 => {
                kb.set_language(Language::English).await?;
                false
            }
            LanguageChoice::Auto => kb.language().await?.is_none(),
        };
        Ok(Run {
            kb,
            embedder,
            chunking: &settings.chunking,
            stored: kb.stored_places().await?,
            writer: Writer { kb, embedder, pending: Vec::new(), embedded: 0, wrote: false, detect },
            stale: Vec::new(),
            report: IngestReport::default(),
            bar,
            started: Instant::now(),
        })
    }

    /// Plans one document's chunks against what is stored and queues the changes.
    async fn document(&mut self, source: &str, blocks: &[Block]) -> anyhow::Result<()> {
        let count = |s: &str| self.embedder.count_tokens(s).saturating_sub(2);
        let plan = FilePlan::new(chunk_blocks(source, blocks, self.chunking, &count), self.stored.get(source));
        if plan.is_empty() {
            self.report.unchanged_files += 1;
            return Ok(());
        }
        self.report.changed_files += 1;
        self.report.chunks_added += plan.new.len();
        self.report.chunks_moved += plan.moved.len();
        self.stale.extend(plan.stale);
        self.writer.add(plan.new, plan.moved).await?;
        self.bar.set_message(format!("{} chunks embedded", self.writer.embedded));
        Ok(())
    }

    /// One warning per thing skipped, as it is found (above the progress bar).
    fn skip(&mut self, skipped: Skipped) {
        self.bar.suspend(|| tracing::warn!(kb = self.kb.name(), reason = %skipped.reason, "{}", skipped.message));
        self.report.skipped.push(skipped);
    }

    /// Writes what is pending, then deletes stale chunks and the `removed` sources.
    async fn finish(mut self, removed: Vec<String>) -> anyhow::Result<IngestReport> {
        self.writer.flush().await?;
        self.bar.finish_and_clear();
        self.report.removed_files = removed.len();
        self.report.chunks_embedded = self.writer.embedded;
        self.report.chunks_removed = self.kb.delete(&self.stale, &removed).await?;
        self.kb.refresh_indexes(self.writer.wrote || self.report.chunks_removed > 0).await?;
        self.report.seconds = self.started.elapsed().as_secs_f64();
        Ok(self.report)
    }
}

pub(crate) fn progress_bar(progress: Progress, items: usize, unit: &str) -> ProgressBar {
    if progress == Progress::Quiet || items == 0 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(items as u64);
    let template = format!("ingesting {{bar:30}} {{pos}}/{{len}} {unit}  {{msg}}  eta {{eta}}");
    bar.set_style(ProgressStyle::with_template(&template).expect("valid template"));
    bar
}

/// The blocks of `source` cut into chunks, each knowing its page, section and lines. A
/// repeated chunk (same text, so same id) is kept once: ids are the table's key.
fn chunk_blocks(source: &str, blocks: &[Block], chunking: &Chunking, count: &dyn Fn(&str) -> usize) -> Vec<Chunk> {
    let mut seen = BTreeSet::new();
    let mut chunks = Vec::new();
    for block in blocks {
        let section = (!block.section.is_empty()).then(|| lore_documents::section_path(&block.section));
        for piece in chunk::chunk(&block.text, chunking, count) {
            let (start, end) = match block.first_line {
                Some(first) => (first + piece.line_start - 1, first + piece.line_end - 1),
                None => (0, 0),
            };
            let mut chunk = Chunk::new(source, chunks.len() as u32, start, end, piece.text);
            chunk.page = block.page;
            chunk.section = section.clone();
            if seen.insert(chunk.id.clone()) {
                chunks.push(chunk);
            }
        }
    }
    chunks
}

/// What one file's chunks change in the store.
#[derive(Debug, Default, PartialEq)]
struct FilePlan {
    /// Not stored yet: to embed and add.
    new: Vec<Chunk>,
    /// Stored, at another position or lines: their place is updated.
    moved: Vec<Chunk>,
    /// Stored ids the file no longer has.
    stale: Vec<String>,
}

impl FilePlan {
    fn new(chunks: Vec<Chunk>, stored: Option<&BTreeMap<String, ChunkPlace>>) -> Self {
        let empty = BTreeMap::new();
        let stored = stored.unwrap_or(&empty);
        let ids: BTreeSet<&str> = chunks.iter().map(|c| c.id.as_str()).collect();
        let stale = stored.keys().filter(|id| !ids.contains(id.as_str())).cloned().collect();
        let mut plan = FilePlan { stale, ..Default::default() };
        for chunk in chunks {
            match stored.get(&chunk.id) {
                None => plan.new.push(chunk),
                Some(place) if *place != ChunkPlace::of(&chunk) => plan.moved.push(chunk),
                Some(_) => {}
            }
        }
        plan
    }

    fn is_empty(&self) -> bool {
        self.new.is_empty() && self.moved.is_empty() && self.stale.is_empty()
    }
}

/// Stored sources under one of `roots` that the walk no longer finds. A file or folder
/// skipped this time keeps its chunks: an unreadable file is not a deleted one.
fn removed_sources(
    stored: &BTreeMap<String, BTreeMap<String, ChunkPlace>>,
    roots: &[PathBuf],
    files: &[PathBuf],
    skipped: &[Skipped],
) -> Vec<String> {
    let present: BTreeSet<&Path> = files.iter().map(PathBuf::as_path).collect();
    stored
        .keys()
        .map(Path::new)
        .filter(|source| roots.iter().any(|r| source.starts_with(r)))
        .filter(|source| !present.contains(source))
        .filter(|source| !skipped.iter().any(|s| source.starts_with(&s.path)))
        .map(|source| source.display().to_string())
        .collect()
}

/// Collects chunks to write and writes them [`BATCH_CHUNKS`] at a time.
struct Writer<'a> {
    kb: &'a KnowledgeBase,
    embedder: &'a dyn Embedder,
    /// Chunks waiting for the next write; `true`: a moved chunk whose stored vector is reused.
    pending: Vec<(Chunk, bool)>,
    embedded: usize,
    wrote: bool,
    /// `language: auto` and no language stored yet: it is detected from the first write.
    detect: bool,
}

/// Characters of text the language is detected from: a few chunks' worth.
const DETECT_CHARS: usize = 4_000;

impl Writer<'_> {
    async fn add(&mut self, new: Vec<Chunk>, moved: Vec<Chunk>) -> anyhow::Result<()> {
        self.pending.extend(new.into_iter().map(|c| (c, false)));
        self.pending.extend(moved.into_iter().map(|c| (c, true)));
        if self.pending.len() >= BATCH_CHUNKS {
            self.flush().await?;
        }
        Ok(())
    }

    /// Embeds what needs it and writes everything pending in one commit.
    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let moved: Vec<String> = pending.iter().filter(|(_, moved)| *moved).map(|(c, _)| c.id.clone()).collect();
        let mut vectors = self.kb.stored_vectors(&moved).await?;
        // A moved chunk whose row vanished meanwhile (another ingest) is embedded anew.
        let to_embed: Vec<&Chunk> = pending.iter().map(|(c, _)| c).filter(|c| !vectors.contains_key(&c.id)).collect();
        let texts: Vec<String> = to_embed.iter().map(|c| c.text.clone()).collect();
        let embedded = self.embedder.embed(&texts).await?;
        self.embedded += texts.len();
        vectors.extend(to_embed.iter().map(|c| c.id.clone()).zip(embedded));
        let rows: Vec<(Chunk, Vec<f32>)> = pending
            .into_iter()
            .map(|(c, _)| {
                let vector = vectors.remove(&c.id).expect("every pending chunk has a vector");
                (c, vector)
            })
            .collect();
        if std::mem::take(&mut self.detect) {
            let sample: String =
                rows.iter().flat_map(|(c, _)| c.text.chars().chain([' '])).take(DETECT_CHARS).collect();
            let language = Language::detect(&sample);
            self.kb.set_language(language).await?;
            tracing::info!(kb = self.kb.name(), %language, "knowledge base language detected");
        }
        self.kb.upsert(&rows).await?;
        self.kb.ensure_fulltext_index().await?;
        self.wrote = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(text: &str, position: u32, line: u32) -> Chunk {
        Chunk::new("a.md", position, line, line, text.into())
    }

    fn stored(chunks: &[Chunk]) -> BTreeMap<String, ChunkPlace> {
        chunks.iter().map(|c| (c.id.clone(), ChunkPlace::of(c))).collect()
    }

    #[test]
    fn a_paragraph_inserted_above_moves_the_chunks_below_it() {
        let before = [chunk("one", 0, 1), chunk("two", 1, 3)];
        let after = vec![chunk("new", 0, 1), chunk("one", 1, 3), chunk("two", 2, 5)];
        let plan = FilePlan::new(after.clone(), Some(&stored(&before)));
        assert_eq!(plan.new, vec![after[0].clone()]);
        assert_eq!(plan.moved, after[1..].to_vec());
        assert!(plan.stale.is_empty());
    }

    #[test]
    fn an_unchanged_file_plans_nothing_and_a_shortened_one_only_deletes() {
        let before = [chunk("one", 0, 1), chunk("two", 1, 3)];
        assert!(FilePlan::new(before.to_vec(), Some(&stored(&before))).is_empty());
        let plan = FilePlan::new(before[..1].to_vec(), Some(&stored(&before)));
        assert_eq!(plan, FilePlan { stale: vec![before[1].id.clone()], ..Default::default() });
        let fresh = FilePlan::new(before.to_vec(), None);
        assert_eq!((fresh.new.len(), fresh.moved.len(), fresh.stale.len()), (2, 0, 0));
    }

    #[test]
    fn a_repeated_paragraph_is_stored_once() {
        let text = "Same words.\n\nOther words.\n\nSame words.\n";
        let cfg = Chunking { max_tokens: 16, overlap_tokens: 0, unit: crate::config::ChunkUnit::Sentence };
        let words = |s: &str| s.split_whitespace().count();
        let block = Block { text: text.into(), first_line: Some(1), ..Block::default() };
        let chunks = chunk_blocks("a.md", &[block], &cfg, &words);
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["Same words.", "Other words."]);
    }

    #[test]
    fn chunks_carry_their_blocks_page_section_and_lines() {
        let cfg = Chunking { max_tokens: 16, overlap_tokens: 0, unit: crate::config::ChunkUnit::Paragraph };
        let words = |s: &str| s.split_whitespace().count();
        let blocks = [
            Block {
                text: "# Leave\n\nCall in sick early.\n".into(),
                section: vec!["Leave".into()],
                first_line: Some(5),
                ..Block::default()
            },
            Block { text: "Page two text.".into(), page: Some(2), ..Block::default() },
        ];
        let chunks = chunk_blocks("h.md", &blocks, &cfg, &words);
        let places: Vec<(u32, String)> = chunks.iter().map(|c| (c.position, c.location())).collect();
        assert_eq!(places, [(0, "§ Leave, lines 5-7".to_string()), (1, "p. 2".to_string())]);
    }

    #[test]
    fn removed_sources_keep_skipped_files_and_other_roots() {
        let place = ChunkPlace { position: 0, line_start: 1, line_end: 1, page: None, section: None };
        let stored: BTreeMap<String, BTreeMap<String, ChunkPlace>> =
            ["/kb/kept.md", "/kb/gone.md", "/kb/locked/x.md", "/kb/bad.txt", "/other/y.md"]
                .into_iter()
                .map(|s| (s.to_string(), BTreeMap::from([("id".to_string(), place.clone())])))
                .collect();
        let skip = |p: &str| Skipped { path: p.into(), reason: SkipReason::Unreadable, message: String::new() };
        let removed = removed_sources(
            &stored,
            &[PathBuf::from("/kb")],
            &[PathBuf::from("/kb/kept.md"), PathBuf::from("/kb/bad.txt")],
            &[skip("/kb/locked"), skip("/kb/bad.txt")],
        );
        assert_eq!(removed, ["/kb/gone.md"]);
    }

    #[test]
    fn the_summary_counts_skipped_files_by_reason() {
        let skip = |reason| Skipped { path: "x".into(), reason, message: String::new() };
        let report = IngestReport {
            files: 4,
            skipped: vec![skip(SkipReason::Binary), skip(SkipReason::TooLarge), skip(SkipReason::Binary)],
            ..Default::default()
        };
        assert_eq!(
            report.to_string(),
            "4 files (0 unchanged, 0 changed, 0 removed, 3 skipped: 1 too large, 2 binary); 0 chunks embedded, 0 added, 0 moved, 0 removed in 0.0s"
        );
    }
}
