//! Conversation memory: recent turns and the last answer's passages per conversation,
//! kept in memory and written to `<data_dir>/conversations/` so they survive a restart.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::prompt::Turn;

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

pub struct Memory {
    dir: Option<PathBuf>,
    max_turns: usize,
    // A std Mutex: held only for in-memory updates, never across an await.
    conversations: Mutex<HashMap<String, Conversation>>,
}

impl Memory {
    /// Memory persisted under `dir` (or only in RAM when `None`).
    pub fn new(dir: Option<PathBuf>, max_turns: usize) -> Self {
        Self { dir, max_turns: max_turns.max(1), conversations: Mutex::new(HashMap::new()) }
    }

    pub fn turns(&self, key: &str) -> Vec<Turn> {
        self.with(key, |c| c.turns.clone())
    }

    pub fn last_sources(&self, key: &str) -> Vec<ShownSource> {
        self.with(key, |c| c.last_sources.clone())
    }

    pub fn record(&self, key: &str, turn: Turn, sources: Vec<ShownSource>) {
        let snapshot = self.with(key, |c| {
            c.turns.push(turn);
            let excess = c.turns.len().saturating_sub(self.max_turns);
            c.turns.drain(..excess);
            c.last_sources = sources;
            c.clone()
        });
        self.save(key, &snapshot);
    }

    pub fn reset(&self, key: &str) {
        self.with(key, |c| *c = Conversation::default());
        if let Some(path) = self.path(key) {
            let _ = std::fs::remove_file(path);
        }
    }

    fn with<T>(&self, key: &str, f: impl FnOnce(&mut Conversation) -> T) -> T {
        let mut all = self.conversations.lock().unwrap_or_else(|e| e.into_inner());
        let conv = all.entry(key.to_string()).or_insert_with(|| self.load(key));
        f(conv)
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        let hash: String = Sha256::digest(key.as_bytes()).iter().take(12).map(|b| format!("{b:02x}")).collect();
        self.dir.as_ref().map(|d| d.join(format!("{hash}.json")))
    }

    fn load(&self, key: &str) -> Conversation {
        self.path(key)
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, key: &str, conv: &Conversation) {
        let Some(path) = self.path(key) else { return };
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(path.parent().expect("has parent"))?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(conv).expect("serialisable"))?;
            std::fs::rename(tmp, &path)
        };
        if let Err(error) = write() {
            tracing::warn!(%error, conversation = key, "cannot save conversation memory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_survive_a_restart_and_reset_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let m = Memory::new(Some(dir.path().to_path_buf()), 2);
        for i in 0..3 {
            m.record("c", Turn { question: format!("q{i}"), answer: "a".into() }, vec![]);
        }
        let again = Memory::new(Some(dir.path().to_path_buf()), 2);
        assert_eq!(again.turns("c").iter().map(|t| t.question.as_str()).collect::<Vec<_>>(), vec!["q1", "q2"]);
        again.reset("c");
        assert!(Memory::new(Some(dir.path().to_path_buf()), 2).turns("c").is_empty());
    }
}
