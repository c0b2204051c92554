//! A real third-party OpenAI-compatible engine for the tests: llama.cpp's own server
//! (`llama-server`), built from the pinned PyPI sdist by `scripts/build-llama-server`
//! (which `scripts/test` runs), on 127.0.0.1, stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::models::cache_dir;

/// The llama.cpp release `scripts/build-llama-server` pins.
pub const RELEASE: &str = "b11434";

pub struct LlamaServer {
    child: Child,
    /// `http://127.0.0.1:PORT/v1`
    pub base_url: String,
}

impl LlamaServer {
    /// The binary: `LORE_LLAMA_SERVER`, else where `scripts/build-llama-server` puts it;
    /// `None` when it is not built.
    pub fn binary() -> Option<PathBuf> {
        let bin = std::env::var("LORE_LLAMA_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|_| cache_dir().join(format!("llama-server/{RELEASE}/bin/llama-server")));
        bin.is_file().then_some(bin)
    }

    /// Starts `llama-server` with `model`, `slots` conversations of `context` tokens each
    /// (one unified cache, as Lore's engine keeps it), and waits until it is ready. `None`,
    /// said on stderr, when the binary is not built.
    pub async fn start(model: &Path, slots: usize, context: usize) -> Option<Self> {
        let Some(bin) = Self::binary() else {
            eprintln!("skipped: llama-server is not built (run scripts/build-llama-server, as scripts/test does)");
            return None;
        };
        let port = crate::free_port();
        let child = Command::new(&bin)
            .args(["-m", &model.to_string_lossy(), "--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-np", &slots.to_string(), "-c", &(slots * context).to_string(), "--kv-unified"])
            .args(["-t", "2", "--no-webui"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let server = Self { child, base_url: format!("http://127.0.0.1:{port}/v1") };
        // /health is 503 while the model loads, 200 once it can answer.
        let health = format!("http://127.0.0.1:{port}/health");
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            if client.get(&health).send().await.is_ok_and(|r| r.status().is_success()) {
                return Some(server);
            }
            assert!(tokio::time::Instant::now() < deadline, "llama-server was not ready on {health} within 120 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
