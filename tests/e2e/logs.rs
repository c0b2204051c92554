//! The real `lore run` behind the fake Telegram server, logging JSON: every line of one
//! question — retrieval, the engine's worker thread, the platform's retries — names it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use lore_tests::fake_telegram::{strip_tags, Chat, FakeTelegram, Fault};
use lore_tests::models::config;
use lore_tests::{lore_binary, wait_until};
use serde_json::Value;

const TOKEN: &str = "123456:fake-telegram-token";
const ASKER: i64 = 7;

/// The `question_id` of the question span a JSON line was written in.
fn question_of(line: &Value) -> Option<&str> {
    let spans = line["spans"].as_array()?;
    spans.iter().find(|s| s["name"] == "question").and_then(|s| s["question_id"].as_str())
}

/// A daemon process, killed when the test ends however it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lore(config: &Path) -> Command {
    let mut command = Command::new(lore_binary());
    // `-v`'s filter, not whatever the test runs under.
    command.arg("--config").arg(config).arg("-v").env_remove("RUST_LOG");
    command
}

#[tokio::test(flavor = "multi_thread")]
async fn a_telegram_questions_json_log_lines_carry_its_id_from_retrieval_through_the_engine_to_the_delivery() {
    lore_tests::init();
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().canonicalize().unwrap().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(
        docs.join("bees.md"),
        "# Bees\n\nHoneybees tell each other where the flowers are with a waggle dance on the comb.\n",
    )
    .unwrap();
    let fake = FakeTelegram::start(TOKEN).await;
    let extra = format!(
        "knowledge_bases:\n  bees:\n    sources: [{}]\n\
         bots:\n  docs:\n    knowledge_base: bees\n    adapter:\n      type: telegram\n      token_env: LORE_TEST_TELEGRAM_TOKEN\n      api_url: {}\n      poll_timeout_secs: 2\n      edit_interval_ms: 300\n",
        docs.display(),
        fake.api_url()
    );
    let config = config(dir.path(), &extra).file;
    let ingest = lore(&config).args(["ingest", "--kb", "bees"]).output().unwrap();
    assert!(ingest.status.success(), "{}", String::from_utf8_lossy(&ingest.stderr));

    let log_file = dir.path().join("lore.log");
    let _daemon = Running(
        lore(&config)
            .arg("run")
            .env("LORE_LOG_FORMAT", "json")
            .env("LORE_TEST_TELEGRAM_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_file).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(&log_file).unwrap_or_default();
    wait_until(Duration::from_secs(120), "the bot starts", || !fake.calls("setMyCommands").is_empty()).await;
    // The platform refuses the answer's first messages: the adapter retries them.
    fake.inject("sendMessage", 2, Fault::RetryAfter(1));
    fake.push_message(Chat::Private(ASKER), ASKER, "How do honeybees tell each other where the flowers are?");
    let shown = || fake.shown_in(ASKER).first().map(|m| strip_tags(m));
    wait_until(Duration::from_secs(120), "an answer", || shown().is_some_and(|m| m.contains("Sources"))).await;
    // Logged once the delivery is over.
    for _ in 0..100 {
        if log().contains(r#""message":"answered""#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let text = log();
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let answered = lines.iter().find(|l| l["message"] == "answered").unwrap_or_else(|| panic!("not answered:\n{text}"));
    let id = question_of(answered).unwrap_or_else(|| panic!("no question span: {answered}"));
    assert_eq!(answered["span"]["bot"], "docs");
    assert_eq!(answered["span"]["platform"], "telegram");
    for (target, message) in [
        ("lore::question::router", "question in line"),
        ("lore::question::pipeline", "retrieved"),
        ("lore::question::pipeline", "generating"),
        // Written on the engine's own thread.
        ("lore_engine", "generation started"),
        ("lore_engine", "generation finished"),
    ] {
        let found: Vec<&Value> = lines
            .iter()
            .filter(|l| l["target"].as_str().is_some_and(|t| t.starts_with(target)) && l["message"] == message)
            .collect();
        assert!(!found.is_empty(), "no {message:?} line:\n{text}");
        assert!(found.iter().all(|l| question_of(l) == Some(id)), "{message:?} without question {id}: {found:?}");
    }
    // The streaming reply's lines (its retries) and its edit throttle's.
    let delivery: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "lore_adapters::stream" || l["target"] == "lore_adapters::throttle")
        .collect();
    assert!(delivery.iter().any(|l| l["level"] == "WARN"), "the refused messages are logged:\n{text}");
    assert!(delivery.iter().all(|l| question_of(l) == Some(id)), "delivery lines without question {id}: {delivery:?}");
}
