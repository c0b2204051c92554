//! Conversation memory: recent turns and the last answer's passages per conversation,
//! kept in memory and written to `<state_dir>/conversations/` so they survive a restart.
//!
//! Written to survive crashes: one writer per conversation, each file written whole to a
//! temporary file, synced, then renamed over the old one, so a crash leaves the old or the
//! new version, never half of one. A file that cannot be read back is moved aside
//! (`.corrupt`) and logged, not silently replaced. Files and the folder are the owner's
//! alone. Idle conversations leave RAM (least recently used first); a conversation
//! unchanged for `memory_days` is forgotten, in RAM as on disk. Files are written (and
//! synced) on tokio's blocking pool, never on an async worker.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::question::prompt::Turn;

/// A passage behind an answer, as `/sources` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShownSource {
    pub number: usize,
    pub source: String,
    pub location: String,
    pub text: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Conversation {
    turns: Vec<Turn>,
    last_sources: Vec<ShownSource>,
}

/// Conversations kept in RAM at most; the least recently used go first (they are on disk).
const IN_RAM: usize = 10_000;

/// How often old files are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

pub struct Memory {
    dir: Option<PathBuf>,
    max_turns: usize,
    /// Conversations unchanged for longer are forgotten, and their files deleted.
    max_age: Duration,
    in_ram: usize,
    // std Mutexes: held for map updates and one small file read or write, never across an
    // await.
    state: Mutex<State>,
    /// Per conversation: the newest version on disk. Holding it makes one writer.
    writers: Mutex<HashMap<String, Arc<Mutex<u64>>>>,
}

#[derive(Default)]
struct State {
    conversations: HashMap<String, Entry>,
    /// Increases with every access: the LRU clock.
    clock: u64,
    last_sweep: Option<Instant>,
}

struct Entry {
    conversation: Conversation,
    /// Bumped by every change; a snapshot older than what is on disk is not written.
    version: u64,
    used: u64,
    /// When the conversation last changed (its file's modification time when loaded).
    changed: SystemTime,
}

impl Memory {
    /// Memory persisted under `dir` (or only in RAM when `None`), keeping `max_turns`
    /// turns per conversation and deleting files older than `max_age`.
    pub fn new(dir: Option<PathBuf>, max_turns: usize, max_age: Duration) -> Self {
        let memory = Self {
            dir,
            max_turns: max_turns.max(1),
            max_age,
            in_ram: IN_RAM,
            state: Mutex::default(),
            writers: Mutex::default(),
        };
        if let Some(dir) = memory.sweep_if_due() {
            delete_old_files(&dir, memory.max_age);
        }
        memory
    }

    pub fn turns(&self, key: &str) -> Vec<Turn> {
        self.entry(key, |e| e.conversation.turns.clone())
    }

    pub fn last_sources(&self, key: &str) -> Vec<ShownSource> {
        self.entry(key, |e| e.conversation.last_sources.clone())
    }

    pub async fn record(&self, key: &str, turn: Turn, sources: Vec<ShownSource>) {
        let (snapshot, version) = self.change(key, |c| {
            c.turns.push(turn);
            let excess = c.turns.len().saturating_sub(self.max_turns);
            c.turns.drain(..excess);
            c.last_sources = sources;
        });
        self.save(key, Some(snapshot), version).await;
    }

    pub async fn reset(&self, key: &str) {
        let (_, version) = self.change(key, |c| *c = Conversation::default());
        self.save(key, None, version).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the conversation's entry (loaded from disk when not in RAM), under the
    /// lock: a change and its version go together.
    fn entry<T>(&self, key: &str, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut state = self.lock();
        state.clock += 1;
        let used = state.clock;
        if !state.conversations.contains_key(key) {
            let (conversation, changed) = self.load(key);
            let version = self.written_version(key);
            state.conversations.insert(key.to_string(), Entry { conversation, version, used, changed });
            self.evict_idle(&mut state);
        }
        let entry = state.conversations.get_mut(key).expect("inserted above");
        entry.used = used;
        if self.expired(entry.changed) {
            entry.conversation = Conversation::default();
        }
        f(entry)
    }

    /// Whether a conversation last changed at `changed` is past `memory_days`.
    fn expired(&self, changed: SystemTime) -> bool {
        SystemTime::now().duration_since(changed).is_ok_and(|age| age > self.max_age)
    }

    /// Changes the conversation and returns the new snapshot and its version.
    fn change(&self, key: &str, f: impl FnOnce(&mut Conversation)) -> (Conversation, u64) {
        self.entry(key, |e| {
            f(&mut e.conversation);
            e.version += 1;
            e.changed = SystemTime::now();
            (e.conversation.clone(), e.version)
        })
    }

    /// Drops the least recently used conversations beyond the RAM limit (they are on disk).
    fn evict_idle(&self, state: &mut State) {
        while state.conversations.len() > self.in_ram {
            let Some(oldest) = state.conversations.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone()) else {
                break;
            };
            state.conversations.remove(&oldest);
            let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
            if writers.get(&oldest).is_some_and(|w| Arc::strong_count(w) == 1) {
                writers.remove(&oldest);
            }
        }
    }

    fn writer(&self, key: &str) -> Arc<Mutex<u64>> {
        let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        writers.entry(key.to_string()).or_default().clone()
    }

    fn written_version(&self, key: &str) -> u64 {
        *self.writer(key).lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        let hash: String = Sha256::digest(key.as_bytes()).iter().take(12).map(|b| format!("{b:02x}")).collect();
        self.dir.as_ref().map(|d| d.join(format!("{hash}.json")))
    }

    /// The conversation on disk and when it last changed; a fresh one when there is none,
    /// it cannot be read, or it is past `memory_days` (the next sweep deletes that file).
    fn load(&self, key: &str) -> (Conversation, SystemTime) {
        let fresh = || (Conversation::default(), SystemTime::now());
        let Some(path) = self.path(key) else { return fresh() };
        let read = std::fs::read(&path).and_then(|bytes| Ok((bytes, std::fs::metadata(&path)?.modified()?)));
        let (bytes, changed) = match read {
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return fresh(),
            Err(error) => {
                tracing::warn!(%error, file = %path.display(), "cannot read conversation memory; starting afresh");
                return fresh();
            }
        };
        if self.expired(changed) {
            return fresh();
        }
        match serde_json::from_slice(&bytes) {
            Ok(conversation) => (conversation, changed),
            Err(error) => {
                let aside = path.with_extension("json.corrupt");
                let moved = std::fs::rename(&path, &aside);
                tracing::warn!(%error, file = %path.display(), kept_as = %aside.display(), moved = moved.is_ok(), "conversation memory is corrupt; set aside, starting afresh");
                fresh()
            }
        }
    }

    /// Writes `conversation` (or deletes the file for `None`) unless a newer version is
    /// already on disk, on the blocking pool (a synced write takes milliseconds), with the
    /// hourly sweep of old files when it is due.
    async fn save(&self, key: &str, conversation: Option<Conversation>, version: u64) {
        let sweep = self.sweep_if_due();
        let Some(path) = self.path(key) else { return };
        let writer = self.writer(key);
        let max_age = self.max_age;
        // The question's span, so that a failed write names the question.
        let span = tracing::Span::current();
        let written = tokio::task::spawn_blocking(move || {
            let _in = span.enter();
            write_version(&path, &writer, conversation.as_ref(), version);
            if let Some(dir) = sweep {
                delete_old_files(&dir, max_age);
            }
        });
        if let Err(error) = written.await {
            tracing::warn!(%error, "saving conversation memory failed");
        }
    }

    /// At most hourly: forgets conversations in RAM unchanged for longer than `max_age`,
    /// and returns the folder whose old files are to be deleted.
    fn sweep_if_due(&self) -> Option<PathBuf> {
        let mut state = self.lock();
        if state.last_sweep.is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
            return None;
        }
        state.last_sweep = Some(Instant::now());
        state.conversations.retain(|_, e| !self.expired(e.changed));
        self.dir.clone()
    }
}

/// Writes `conversation` to `path` (or deletes it for `None`) unless `writer` says a
/// version at least as new is there; holding `writer` makes one writer per conversation.
fn write_version(path: &Path, writer: &Mutex<u64>, conversation: Option<&Conversation>, version: u64) {
    let mut written = writer.lock().unwrap_or_else(|e| e.into_inner());
    if *written >= version {
        return;
    }
    let result = match conversation {
        Some(c) => write_atomically(path, &serde_json::to_vec(c).expect("serialisable")),
        None => match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    };
    match result {
        Ok(()) => *written = version,
        Err(error) => tracing::warn!(%error, file = %path.display(), "cannot save conversation memory"),
    }
}

/// Deletes conversation files in `dir` untouched for longer than `max_age`.
fn delete_old_files(dir: &Path, max_age: Duration) {
    let Ok(files) = std::fs::read_dir(dir) else { return };
    let now = SystemTime::now();
    let mut deleted = 0;
    for file in files.flatten() {
        let old = file
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > max_age));
        let ours = file.file_name().to_string_lossy().contains(".json");
        if old && ours && std::fs::remove_file(file.path()).is_ok() {
            deleted += 1;
        }
    }
    if deleted > 0 {
        tracing::info!(deleted, days = max_age.as_secs() / 86_400, "deleted old conversation memory");
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one: a
/// temporary file of its own, synced, renamed over `path`, then the folder synced. New
/// folders and files are the owner's alone.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("a file in a folder");
    create_private_dir(dir)?;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path.file_name().expect("a file name").to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename itself is durable once the folder is synced.
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` (and missing parents) readable by its owner only.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MONTH: Duration = Duration::from_secs(30 * 86_400);

    fn turn(q: &str) -> Turn {
        Turn { question: q.into(), answer: "a".into() }
    }

    fn questions(m: &Memory, key: &str) -> Vec<String> {
        m.turns(key).into_iter().map(|t| t.question).collect()
    }

    #[tokio::test]
    async fn turns_survive_a_restart_and_reset_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let m = Memory::new(Some(dir.path().to_path_buf()), 2, MONTH);
        for i in 0..3 {
            m.record("c", turn(&format!("q{i}")), vec![]).await;
        }
        let again = Memory::new(Some(dir.path().to_path_buf()), 2, MONTH);
        assert_eq!(questions(&again, "c"), vec!["q1", "q2"]);
        again.reset("c").await;
        assert!(Memory::new(Some(dir.path().to_path_buf()), 2, MONTH).turns("c").is_empty());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn memory_is_the_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data/conversations");
        let m = Memory::new(Some(dir.clone()), 2, MONTH);
        m.record("c", turn("q"), vec![]).await;
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let file = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left behind");
    }

    #[tokio::test]
    async fn a_corrupt_file_is_set_aside_and_the_conversation_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let m = Memory::new(Some(dir.path().to_path_buf()), 2, MONTH);
        m.record("c", turn("q"), vec![]).await;
        let file = m.path("c").unwrap();
        std::fs::write(&file, b"{\"turns\": [ half a file").unwrap();
        let again = Memory::new(Some(dir.path().to_path_buf()), 2, MONTH);
        assert!(again.turns("c").is_empty());
        let aside = file.with_extension("json.corrupt");
        assert_eq!(std::fs::read(&aside).unwrap(), b"{\"turns\": [ half a file", "kept for a person to look at");
        again.record("c", turn("new"), vec![]).await;
        assert_eq!(questions(&Memory::new(Some(dir.path().to_path_buf()), 2, MONTH), "c"), vec!["new"]);
    }

    #[tokio::test]
    async fn idle_conversations_leave_ram_and_come_back_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Memory::new(Some(dir.path().to_path_buf()), 4, MONTH);
        m.in_ram = 2;
        for key in ["a", "b", "c"] {
            m.record(key, turn(key), vec![]).await;
        }
        assert_eq!(m.lock().conversations.len(), 2);
        assert!(!m.lock().conversations.contains_key("a"), "the least recently used went");
        m.record("a", turn("a2"), vec![]).await;
        assert_eq!(questions(&m, "a"), vec!["a", "a2"]);
    }

    #[tokio::test]
    async fn a_conversation_past_memory_days_is_forgotten_in_ram_too() {
        for dir in [None, Some(tempfile::tempdir().unwrap())] {
            let m = Memory::new(dir.as_ref().map(|d| d.path().to_path_buf()), 4, MONTH);
            m.record("old", turn("q"), vec![]).await;
            m.record("new", turn("q"), vec![]).await;
            m.lock().conversations.get_mut("old").unwrap().changed = SystemTime::now() - 2 * MONTH;
            assert!(m.turns("old").is_empty(), "on disk: {}", dir.is_some());
            assert!(m.last_sources("old").is_empty());
            assert_eq!(questions(&m, "new"), vec!["q"]);
            // Swept from RAM once the hour comes round (and its file, as old, with it).
            m.lock().conversations.get_mut("old").unwrap().changed = SystemTime::now() - 2 * MONTH;
            if let Some(path) = m.path("old") {
                let file = std::fs::File::options().write(true).open(path).unwrap();
                file.set_modified(SystemTime::now() - 2 * MONTH).unwrap();
            }
            m.lock().last_sweep = None;
            m.sweep_if_due();
            assert!(!m.lock().conversations.contains_key("old"));
            m.record("old", turn("again"), vec![]).await;
            assert_eq!(questions(&m, "old"), vec!["again"], "a new message starts afresh");
        }
    }

    #[tokio::test]
    async fn files_older_than_memory_days_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let m = Memory::new(Some(dir.path().to_path_buf()), 2, MONTH);
        m.record("old", turn("q"), vec![]).await;
        m.record("new", turn("q"), vec![]).await;
        // Started (and swept) before the file grew old: it reads it as forgotten all the same.
        let running = Memory::new(Some(dir.path().to_path_buf()), 2, MONTH);
        let old = std::fs::File::options().write(true).open(m.path("old").unwrap()).unwrap();
        old.set_modified(SystemTime::now() - 2 * MONTH).unwrap();
        assert!(running.turns("old").is_empty());
        let again = Memory::new(Some(dir.path().to_path_buf()), 2, MONTH);
        assert!(again.turns("old").is_empty());
        assert_eq!(questions(&again, "new"), vec!["q"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_leave_the_newest_conversation_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Memory::new(Some(dir.path().to_path_buf()), 100, MONTH));
        let tasks: Vec<_> = (0..4)
            .map(|t| {
                let m = m.clone();
                tokio::spawn(async move {
                    for i in 0..25 {
                        m.record("c", turn(&format!("{t}-{i}")), vec![]).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let on_disk = questions(&Memory::new(Some(dir.path().to_path_buf()), 100, MONTH), "c");
        assert_eq!(on_disk.len(), 100);
        assert_eq!(on_disk, questions(&m, "c"));
    }
}
