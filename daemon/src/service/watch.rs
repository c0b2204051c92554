//! `watch: true`: the running daemon re-ingests a knowledge base's `sources` when files
//! under them change, so bots answer from what was just saved without a `lore ingest`.
//!
//! Events are debounced ([`DEBOUNCE`]); each watched knowledge base has one task that
//! runs one ingest at a time, and changes that arrive during a run lead to one more run.
//! What the daemon answers from catches up within `READ_CONSISTENCY` of each write.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use notify_debouncer_mini::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{new_debouncer, DebounceEventResult, Debouncer};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::task::JoinHandle;

use crate::app::App;
use crate::ingest::{ingest, Progress, Settings};

/// Quiet time after the last change before a knowledge base is re-ingested: an editor's
/// save or a copied folder is one run, not dozens.
pub const DEBOUNCE: Duration = Duration::from_secs(1);

/// The watchers of every knowledge base with `watch: true`; dropping this stops them.
pub struct Watchers {
    tasks: Vec<JoinHandle<()>>,
    _debouncers: Vec<Debouncer<RecommendedWatcher>>,
}

impl Drop for Watchers {
    fn drop(&mut self) {
        // An ingest cut short here is safe: the next one completes it.
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts watching every knowledge base with `watch: true`. Each is re-ingested once at
/// start too, for changes made while the daemon was down.
pub fn start(app: &Arc<App>) -> anyhow::Result<Watchers> {
    let mut watchers = Watchers { tasks: Vec::new(), _debouncers: Vec::new() };
    if app.config.knowledge_bases.values().any(|kb| kb.watch) {
        // Every re-ingest parses in child processes: a program that cannot start them stops
        // here, not at the first document.
        crate::ingest::sandbox::Sandbox::locate(&app.config.parsing)?;
    }
    for (name, kb) in app.config.knowledge_bases.iter().filter(|(_, kb)| kb.watch) {
        let (tx, rx) = unbounded_channel();
        let mut debouncer = new_debouncer(DEBOUNCE, move |events: DebounceEventResult| {
            // The receiver is gone only when the daemon stops.
            let _ = tx.send(events);
        })
        .with_context(|| format!("cannot watch knowledge base {name}"))?;
        for (i, source) in kb.sources.iter().enumerate() {
            debouncer.watcher().watch(source, RecursiveMode::Recursive).map_err(|e| {
                app.config.error(&format!("knowledge_bases.{name}.sources.{i}"), format!("cannot watch it: {e}"))
            })?;
        }
        tracing::info!(kb = %name, sources = kb.sources.len(), "watching for changes");
        watchers.tasks.push(tokio::spawn(reingest_on_change(app.clone(), name.clone(), rx)));
        watchers._debouncers.push(debouncer);
    }
    Ok(watchers)
}

async fn reingest_on_change(app: Arc<App>, kb: String, mut events: UnboundedReceiver<DebounceEventResult>) {
    reingest(&app, &kb, "start").await;
    while let Some(batch) = events.recv().await {
        let mut changed = relevant_changes(&app, &kb, batch);
        // What came in while the last run was busy is covered by this one run.
        while let Ok(more) = events.try_recv() {
            changed += relevant_changes(&app, &kb, more);
        }
        if changed > 0 {
            reingest(&app, &kb, &format!("{changed} paths changed")).await;
        }
    }
}

/// Changed paths that may matter: supported files, and folders (no extension; a removed
/// folder can no longer be told from a file). Editor swap files and the data directory
/// (if it lies inside a source) are not.
fn relevant_changes(app: &App, kb: &str, events: DebounceEventResult) -> usize {
    match events {
        Ok(events) => events.iter().filter(|e| relevant(&e.path, app.config.data_dir.folder())).count(),
        Err(error) => {
            // Watching may have lost events (e.g. the inotify queue overflowed): re-ingest.
            tracing::warn!(kb, %error, "watching for changes failed; re-ingesting to be sure");
            1
        }
    }
}

/// `data_dir` is `None` when the knowledge bases are in object storage: no local path is
/// then the store's own.
fn relevant(path: &Path, data_dir: Option<&Path>) -> bool {
    // A path without an extension may be a folder.
    let kind_matters = path.extension().is_none() || lore_documents::Format::of_path(path).is_some();
    kind_matters && !data_dir.is_some_and(|dir| path.starts_with(dir))
}

async fn reingest(app: &App, kb: &str, why: &str) {
    tracing::info!(kb, why, "re-ingesting");
    let sources = app.config.knowledge_bases[kb].sources.clone();
    let settings = Settings::for_kb(&app.config, kb);
    let result = async {
        let table = app.kb_for_ingest(kb).await?;
        let report = ingest(&table, app.embedder.as_ref(), &sources, &settings, Progress::Quiet).await?;
        let questions = app.refresh_questions(&table, settings.generated_questions, Progress::Quiet).await?;
        anyhow::Ok((report, questions))
    }
    .await;
    match result {
        Ok((report, questions)) => tracing::info!(kb, %report, %questions, "re-ingested"),
        Err(error) => tracing::error!(kb, error = format!("{error:#}"), "re-ingest failed; the next change retries"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_text_files_and_folders_outside_the_data_directory_matter() {
        let data = Some(Path::new("/kb/.lore"));
        assert!(relevant(Path::new("/kb/notes.md"), data));
        assert!(relevant(Path::new("/kb/NOTES.TXT"), data));
        assert!(relevant(Path::new("/kb/chapter"), data));
        assert!(!relevant(Path::new("/kb/.notes.md.swp"), data));
        assert!(!relevant(Path::new("/kb/photo.jpg"), data));
        assert!(!relevant(Path::new("/kb/.lore/docs.lance/_versions"), data));
    }

    #[test]
    fn with_knowledge_bases_in_object_storage_every_local_text_file_matters() {
        assert!(relevant(Path::new("/kb/.lore/notes.md"), None));
        assert!(!relevant(Path::new("/kb/photo.jpg"), None));
    }
}
