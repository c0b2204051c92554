//! A real S3-compatible server for the tests: moto's server (PyPI `moto[server]`, installed
//! into the venv by `scripts/setup --test-models`) on 127.0.0.1, stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::models::cache_dir;

/// The credentials moto accepts by default; the lore processes read them from these
/// standard variables, as they would real ones.
pub const CREDENTIALS: [(&str, &str); 2] = [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")];

pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    /// Starts moto on a free port and waits until it answers. It takes any credentials.
    pub async fn start() -> Self {
        Self::launch(false).await
    }

    /// Like [`Moto::start`], but checking credentials: it knows none, so every request
    /// is refused as a real S3 refuses unknown keys (403 `InvalidAccessKeyId`).
    pub async fn start_checking_credentials() -> Self {
        Self::launch(true).await
    }

    async fn launch(check_credentials: bool) -> Self {
        let bin = moto_server();
        let port = crate::free_port();
        let mut command = Command::new(&bin);
        if check_credentials {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        }
        let child = command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let moto = Self { child, endpoint: format!("http://127.0.0.1:{port}") };
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while client.get(&moto.endpoint).send().await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "moto did not answer on {} within 60 s", moto.endpoint);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        moto
    }

    /// Creates a bucket (moto takes an unsigned request).
    pub async fn create_bucket(&self, name: &str) {
        let response = reqwest::Client::new().put(format!("{}/{name}", self.endpoint)).send().await.unwrap();
        assert!(response.status().is_success(), "creating bucket {name}: {}", response.status());
    }

    /// The `storage:` section that reaches this server.
    pub fn storage_config(&self) -> String {
        storage_config(&self.endpoint)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `storage:` section for an S3-compatible server at `endpoint` (http, on this machine).
pub fn storage_config(endpoint: &str) -> String {
    format!("storage:\n  endpoint: {endpoint}\n  region: us-east-1\n  allow_http: true\n")
}

/// Sets [`CREDENTIALS`] in this process, for a daemon the test runs in it.
pub fn set_credentials() {
    for (name, value) in CREDENTIALS {
        std::env::set_var(name, value);
    }
    // Nothing else may decide which credentials are used.
    for name in ["AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"] {
        std::env::remove_var(name);
    }
}

fn moto_server() -> PathBuf {
    let bin = cache_dir().join("venv/bin/moto_server");
    assert!(bin.is_file(), "{} is missing: run scripts/setup --test-models (it installs moto[server])", bin.display());
    bin
}
