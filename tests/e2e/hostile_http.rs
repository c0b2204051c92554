//! Anonymous abuse of the HTTP server, against the real `lore run` (default models, an API
//! key and a Telegram bot on the fake Bot API server) started under an open-files limit
//! of 1024: about a thousand idle connections and a slow-header client from other loopback
//! addresses (Linux routes all of 127.0.0.0/8 to loopback) cannot keep a bot question or
//! an authenticated API question from being answered, and the server closes them.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use lore_tests::daemon::sample_kb;
use lore_tests::fake_telegram::{strip_tags, Chat, FakeTelegram};
use lore_tests::{free_port, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const TOKEN: &str = "123456:fake-telegram-token";
const KEY: &str = "key-under-attack";
const QUESTION: &str = "How do honeybees tell each other where the flowers are?";
/// About a thousand, and more than the daemon's limit leaves room for once its own files
/// are open: without caps, it could not take another connection.
const IDLE: usize = 1100;
const HEADER_TIMEOUT_SECS: u64 = 5;

/// A connection to `addr` from the loopback address `from`.
async fn connect_from(from: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    socket.connect(addr).await
}

/// Whether the server closes `stream` (end of stream or a reset) within `within`.
async fn closed_by_server(mut stream: TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // A refused connection's 503, then the close.
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(within, read).await.is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_idle_connections_and_a_slow_header_client_cannot_lock_out_the_bot_or_the_api() {
    lore_tests::init();
    // The attacker's sockets are this process's: more than the daemon may have.
    let limit = rlimit::increase_nofile_limit(8192).unwrap();
    assert!(limit >= IDLE as u64 + 512, "this test needs {} open files, the limit is {limit}", IDLE + 512);
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeTelegram::start(TOKEN).await;
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let extra = format!(
        "server:\n  listen: {addr}\n  api_keys: [{{key_env: LORE_TEST_ABUSE_KEY}}]\n  max_connections: 300\n  max_connections_per_ip: 100\n  header_read_timeout_secs: {HEADER_TIMEOUT_SECS}\n{}bots:\n  docs:\n    knowledge_base: bees\n    adapter:\n      type: telegram\n      token_env: LORE_TEST_TELEGRAM_TOKEN\n      api_url: {}\n      poll_timeout_secs: 2\n",
        sample_kb(),
        fake.api_url()
    );
    let config = lore_tests::models::config(dir.path(), &extra).file;
    let lore = |args: &[&str]| {
        let mut command = tokio::process::Command::new("prlimit");
        command
            .arg("--nofile=1024:1024")
            .arg(lore_tests::lore_binary())
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("LORE_TEST_ABUSE_KEY", KEY)
            .env("LORE_TEST_TELEGRAM_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true);
        command
    };
    let ingested = lore(&["ingest", "--kb", "bees"]).output().await.expect("prlimit (util-linux) runs lore");
    assert!(ingested.status.success(), "{}", String::from_utf8_lossy(&ingested.stderr));
    let mut daemon = lore(&["run"]).stdout(Stdio::null()).spawn().unwrap();
    let client = reqwest::Client::new();
    let health = format!("http://{addr}/health");
    for attempt in 0.. {
        if client.get(&health).send().await.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(attempt < 1800, "the daemon did not start serving");
        assert!(daemon.try_wait().unwrap().is_none(), "the daemon exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_until(Duration::from_secs(60), "the bot starts polling", || !fake.calls("getUpdates").is_empty()).await;

    // The attack: idle connections from two addresses, and a header sent a byte a second.
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let from = if i % 2 == 0 { "127.0.0.2" } else { "127.0.0.3" };
        idle.push(connect_from(from, addr).await.expect("the kernel takes the connection"));
    }
    let mut slow = connect_from("127.0.0.4", addr).await.unwrap();
    let slow_header = tokio::spawn(async move {
        for byte in b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n".iter().cycle().take(600) {
            if slow.write_all(&[*byte]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        false
    });

    // While they are open: an API question with the key, on a connection of its own as a
    // new client opens one, and a question to the bot.
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    fake.push_message(Chat::Private(42), 42, QUESTION);
    let asked = fresh
        .post(format!("http://{addr}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&serde_json::json!({"model": "docs", "messages": [{"role": "user", "content": QUESTION}]}))
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .expect("the API question is taken");
    assert_eq!(asked.status(), 200);
    let answer: serde_json::Value = asked.json().await.unwrap();
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.to_lowercase().contains("dance") && content.contains("Sources"), "{content}");
    let shown = || fake.shown_in(42).first().map(|m| strip_tags(m));
    wait_until(Duration::from_secs(300), "the bot answers", || shown().is_some_and(|m| m.contains("Sources"))).await;

    // Every idle connection is closed by the server: refused at once over the caps (100
    // per address), or when its header did not come in time.
    let within = Duration::from_secs(HEADER_TIMEOUT_SECS + 30);
    let closes: Vec<_> = idle.into_iter().map(|s| tokio::spawn(closed_by_server(s, within))).collect();
    let mut closed = 0;
    for close in closes {
        closed += usize::from(close.await.unwrap());
    }
    assert_eq!(closed, IDLE, "idle connections the server left open");
    assert!(slow_header.await.unwrap(), "the slow header was not cut");
    let metrics = fresh.get(format!("http://{addr}/metrics")).bearer_auth(KEY).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix("lore_http_connections_refused_total{reason=\"max_connections_per_ip\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_default();
    assert!(refused >= (IDLE - 200) as f64, "refused over the per-address cap: {refused}\n{metrics}");

    let pid = daemon.id().unwrap().to_string();
    let term = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(term.success());
    let exit = tokio::time::timeout(Duration::from_secs(60), daemon.wait()).await.expect("a clean stop").unwrap();
    assert!(exit.success(), "{exit}");
}
