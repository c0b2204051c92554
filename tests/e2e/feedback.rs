//! What the community teaches Lore is durable and portable: a vote and a correction
//! answered `200` by a real `lore serve` process are still there after that process is
//! killed with `SIGKILL` (no shutdown, no flush), for `lore gold export` and for the next
//! daemon; `lore gold import` and `export` move gold files in and out.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lore_tests::models::config;
use lore_tests::{free_port, lore_binary};
use serde_json::{json, Value};

/// `lore --config CONFIG ARGS…`, which must succeed: its standard output.
fn lore(config: &Path, args: &[&str]) -> String {
    let out = Command::new(lore_binary()).arg("--config").arg(config).args(args).output().unwrap();
    assert!(out.status.success(), "lore {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `lore serve` on `config`, started and answering `/health`.
async fn serve(config: &Path, base: &str) -> Child {
    let mut child = Command::new(lore_binary())
        .arg("--config")
        .arg(config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if client.get(format!("{base}/health")).send().await.is_ok_and(|r| r.status().is_success()) {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    panic!("lore serve did not start");
}

async fn post(base: &str, path: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vote_and_a_correction_outlive_a_daemon_killed_with_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let bees = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/sample/honeybees.md");
    let extra = format!(
        "server:\n  listen: 127.0.0.1:{port}\nknowledge_bases:\n  bees:\n    sources: [{}]\nbots:\n  docs:\n    knowledge_base: bees\n    adapter: {{type: console}}\n",
        bees.display()
    );
    let file = config(dir.path(), &extra).file;
    lore(&file, &["ingest", "--kb", "bees"]);

    let mut daemon = serve(&file, &base).await;
    let question = json!({"model": "docs", "messages": [{"role": "user", "content": "How do honeybees tell each other where flowers are?"}]});
    let answer = post(&base, "/v1/chat/completions", question).await;
    let id = answer["id"].as_str().unwrap().to_string();
    // The answer's record is written in the background; the correction needs it.
    let mut corrected = None;
    for _ in 0..100 {
        let response = reqwest::Client::new()
            .post(format!("{base}/v1/gold"))
            .header("content-type", "application/json")
            .body(json!({"id": id, "answer": "With the waggle dance", "source": "honeybees.md"}).to_string())
            .send()
            .await
            .unwrap();
        if response.status().is_success() {
            corrected = Some(response.text().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(corrected.is_some(), "the correction was taken");
    post(&base, "/v1/feedback", json!({"id": id, "rating": "down", "comment": "too long"})).await;
    // At once after the 200s: nothing gets a chance to flush.
    daemon.kill().unwrap();
    daemon.wait().unwrap();

    let exported = lore(&file, &["gold", "export", "--bot", "docs"]);
    let cases: Vec<Value> = exported.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let answer_id = id.trim_start_matches("chatcmpl-");
    assert_eq!(
        cases,
        [
            json!({"question": "How do honeybees tell each other where flowers are?", "answer": "With the waggle dance", "source": "honeybees.md", "id": answer_id})
        ]
    );

    let mut again = serve(&file, &base).await;
    let figures = reqwest::get(format!("{base}/v1/quality?days=1")).await.unwrap().text().await.unwrap();
    let figures: Value = serde_json::from_str(&figures).unwrap();
    assert_eq!(figures["places"][0]["totals"]["down"], 1, "the vote outlived the kill: {figures}");
    assert_eq!(figures["review"], json!([]), "and the correction took the answer off the review queue");
    again.kill().unwrap();
    again.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn lore_gold_import_keeps_a_files_cases_once_and_export_writes_them_back_in_the_same_format() {
    let dir = tempfile::tempdir().unwrap();
    let bees = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/sample/honeybees.md");
    let extra = format!(
        "knowledge_bases:\n  bees:\n    sources: [{}]\nbots:\n  docs:\n    knowledge_base: bees\n    adapter: {{type: console}}\n",
        bees.display()
    );
    let file = config(dir.path(), &extra).file;
    let gold = dir.path().join("gold.jsonl");
    let cases = [
        json!({"question": "How do bees find flowers?", "answer": "The waggle dance", "source": "honeybees.md"}),
        json!({"question": "Where can I park?", "answer": null}),
        json!({"question": "Who is the queen?", "answer": "The mother of the hive", "id": "q-1"}),
    ];
    let text: String = cases.iter().map(|c| format!("{c}\n")).collect();
    std::fs::write(&gold, &text).unwrap();
    lore(&file, &["gold", "import", "--bot", "docs", &gold.display().to_string()]);
    // Importing the same file again keeps each case once.
    lore(&file, &["gold", "import", "--bot", "docs", &gold.display().to_string()]);
    let exported = lore(&file, &["gold", "export", "--bot", "docs"]);
    let mut back: Vec<Value> = exported.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(back.len(), 3, "{exported}");
    back.sort_by_key(|c| c["question"].as_str().unwrap().to_string());
    assert_eq!(back[0]["answer"], cases[0]["answer"]);
    assert_eq!(back[0]["source"], "honeybees.md");
    assert_eq!(back[1]["answer"], Value::Null, "a question the documents do not cover stays one");
    assert_eq!(back[2]["id"], "q-1", "a case's own id is kept");
    // What export writes is a gold file again.
    std::fs::write(&gold, &exported).unwrap();
    lore(&file, &["gold", "import", "--bot", "docs", &gold.display().to_string()]);
    assert_eq!(lore(&file, &["gold", "export", "--bot", "docs"]).lines().count(), 3);
    let tomorrow = lore_tests_day(1);
    assert_eq!(lore(&file, &["gold", "export", "--bot", "docs", "--since", &tomorrow]), "", "nothing made after today");

    let refused = Command::new(lore_binary())
        .arg("--config")
        .arg(&file)
        .args(["gold", "export", "--bot", "nobody"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("nobody"), "names the unknown bot");
}

/// The day `days` from today (UTC), as `YYYY-MM-DD`.
fn lore_tests_day(days: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    lore::calendar::day_of(now + days * 86_400_000)
}
