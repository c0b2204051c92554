//! The HTTP API (`server:`) driven by OpenAI's official Python client, and `/metrics`,
//! `/ready` read as a monitoring system would.

use std::path::Path;
use std::time::Duration;

use lore_tests::daemon::{sample_kb, TelegramDaemon};
use lore_tests::free_port;
use lore_tests::models::{cache_dir, embedder_path, generator_path, model_name, venv_python};
use serde_json::Value;

const QUESTION: &str = "How do honeybees tell each other where the flowers are?";

async fn get(url: &str) -> (u16, String) {
    get_with(url, None).await
}

/// A GET with `key` as the bearer token, if given.
async fn get_with(url: &str, key: Option<&str>) -> (u16, String) {
    let request = reqwest::Client::new().get(url);
    let request = match key {
        Some(key) => request.bearer_auth(key),
        None => request,
    };
    let response = request.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The value of one sample in Prometheus' text format (`name{labels} value`).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_client_gets_grounded_answers_the_generator_embeddings_and_proper_errors() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::env::set_var("LORE_TEST_API_KEY", "key-main");
    std::env::set_var("LORE_TEST_LIMITED_KEY", "key-limited");
    std::env::set_var("LORE_TEST_FLOOD_KEY", "key-flood");
    std::env::set_var("LORE_TEST_ENGINE_KEY", "key-engine");
    let config = format!(
        "server:\n  listen: 127.0.0.1:{port}\n  api_keys:\n    - key_env: LORE_TEST_API_KEY\n    - key_env: LORE_TEST_LIMITED_KEY\n      bots: [docs]\n    - key_env: LORE_TEST_FLOOD_KEY\n    - key_env: LORE_TEST_ENGINE_KEY\nline:\n  rate_limit: {{questions: 3, per_seconds: 600}}\n{}",
        sample_kb()
    );
    let daemon = TelegramDaemon::start(dir.path(), &config, "bees", "").await;
    let base = format!("http://127.0.0.1:{port}");
    let (generator, embedder) = (model_name(&generator_path()), model_name(&embedder_path()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/openai_client.py");
    let keys = ["key-main", "key-limited", "key-flood", "key-engine"];
    let args = [&base, keys[0], keys[1], keys[2], keys[3], "docs", &generator, &embedder, QUESTION].map(String::from);
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(venv_python()).arg(script).args(args).output().expect("the venv's python")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "the client script failed: {stderr}");
    let seen: Value = serde_json::from_slice(&run.stdout).unwrap();

    let mut models = vec!["docs".to_string(), generator.clone(), embedder.clone()];
    models.sort();
    assert_eq!(seen["models"], serde_json::json!(models));
    for way in ["whole", "streamed"] {
        let answer = &seen[way];
        let content = answer["content"].as_str().unwrap();
        assert!(content.to_lowercase().contains("dance"), "{way}: the gold answer: {content}");
        assert!(content.contains("Sources:\n[1] "), "{way}: numbered sources under the text: {content}");
        assert!(answer["sources"][0]["source"].as_str().unwrap().ends_with("honeybees.md"), "{way}: {answer}");
        assert_eq!(answer["finish_reason"], "stop");
    }
    assert!(seen["streamed"]["chunks"].as_u64().unwrap() >= 4, "streamed in pieces: {}", seen["streamed"]);
    assert!(!seen["generator"]["content"].as_str().unwrap().trim().is_empty(), "{}", seen["generator"]);
    assert_eq!(seen["generator"]["model"], generator.as_str());
    let completions = &seen["completions"];
    assert_eq!(completions["object"], "text_completion");
    assert!(!completions["text"].as_str().unwrap().trim().is_empty(), "{completions}");
    assert!(!completions["streamed"].as_str().unwrap().trim().is_empty(), "{completions}");
    assert!(completions["chunks"].as_u64().unwrap() >= 2, "{completions}");
    assert_eq!(seen["embeddings"], serde_json::json!({"one": 1, "dim": 384, "many": 3}));

    let status = |case: &str| seen[case]["status"].as_u64().unwrap_or_else(|| panic!("{case} did not fail: {seen}"));
    assert_eq!(status("bad_key"), 401);
    assert_eq!(status("unknown_model"), 404);
    assert_eq!(seen["unknown_model"]["code"], "model_not_found");
    assert_eq!(status("not_allowed"), 404, "a key limited to a bot cannot use the generator");
    assert_eq!(status("no_question"), 400);
    assert_eq!(status("too_large"), 413);
    assert_eq!(status("overloaded"), 429);
    assert!(seen["overloaded"]["retry_after"].as_str().is_some_and(|s| s.parse::<u64>().unwrap() >= 1));

    // With keys, monitoring needs one: without, /metrics is refused and /ready says only
    // whether it is ready.
    let url = format!("{base}/metrics");
    assert_eq!(get(&url).await.0, 401);
    let (_, anonymous) = get(&format!("{base}/ready")).await;
    assert_eq!(serde_json::from_str::<Value>(&anonymous).unwrap(), serde_json::json!({"ready": true}));
    let (_, details) = get_with(&format!("{base}/ready"), Some(keys[1])).await;
    assert!(details.contains("knowledge_bases") && details.contains("adapters"), "any key sees details: {details}");

    // The three streams left unread stop when their callers go: nothing holds the engine.
    let mut metrics = String::new();
    let mut in_progress = None;
    for _ in 0..300 {
        metrics = get_with(&url, Some(keys[0])).await.1;
        in_progress = sample(&metrics, "lore_answers_in_progress");
        if in_progress == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(in_progress, Some(0.0), "answers still running after their callers left:\n{metrics}");
    assert_eq!(sample(&metrics, "lore_waiting_questions"), Some(0.0));
    let asked =
        sample(&metrics, r#"lore_questions_total{bot="docs",platform="api",channel="default"}"#).unwrap_or_default();
    assert!(asked >= 6.0, "two answers, three streams, one refusal: {asked}\n{metrics}");
    assert_eq!(sample(&metrics, r#"lore_refusals_total{bot="docs",platform="api",channel="default"}"#), Some(1.0));
    assert!(sample(&metrics, r#"lore_knowledge_base_rows{kb="bees"}"#).unwrap_or_default() > 0.0, "{metrics}");
    assert!(metrics.contains("lore_first_token_seconds_bucket"), "{metrics}");
    let cells = sample(&metrics, "lore_kv_cells").unwrap();
    let in_use = sample(&metrics, "lore_kv_cells_in_use").unwrap();
    assert!(in_use > 0.0 && in_use <= cells, "prompts kept for reuse hold cells: {in_use} of {cells}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_is_up_and_ready_names_an_empty_knowledge_base() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!("server:\n  listen: 127.0.0.1:{port}\n{}  unfilled:\n    sources: []\n", sample_kb());
    let lost = "  lost:\n    knowledge_base: unfilled\n    adapter:\n      type: telegram\n      token_env: LORE_TEST_TELEGRAM_TOKEN\n      api_url: {api}\n      poll_timeout_secs: 2\n";
    // A Bot API server that takes connections and never answers: that bot never connects.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = format!(
        "  silent:\n    knowledge_base: bees\n    adapter:\n      type: telegram\n      token_env: LORE_TEST_TELEGRAM_TOKEN\n      api_url: http://{}\n      request_timeout_secs: 1\n",
        mute.local_addr().unwrap()
    );
    let daemon = TelegramDaemon::start(dir.path(), &config, "bees", &format!("{lost}{silent}")).await;
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(get(&format!("{base}/health")).await, (200, "ok".to_string()));
    let (status, body) = get(&format!("{base}/ready")).await;
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["knowledge_bases"]["bees"]["ok"], true, "{ready}");
    assert_eq!(ready["knowledge_bases"]["unfilled"]["ok"], false, "{ready}");
    assert_eq!(ready["adapters"]["docs"], "running", "{ready}");
    assert_eq!(ready["adapters"]["silent"], "connecting", "running only once its platform answers: {ready}");
    let page = get(&base).await;
    assert_eq!(page.0, 200);
    assert!(page.1.contains("<title>Lore</title>"));
    daemon.stop().await;
}

/// Runs the browser script `script` (in `tests/python/`) on `url` with `question`, saving
/// its screenshot as `name`.png in the cache's screenshots; what the page showed, as the
/// script prints it, and the screenshot's path.
pub(crate) async fn in_chromium(script: &str, url: &str, question: &str, name: &str) -> (Value, std::path::PathBuf) {
    let screenshots = cache_dir().join("screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let screenshot = screenshots.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&screenshot);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join(script);
    let args = [url.to_string(), question.to_string(), screenshot.display().to_string()];
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(venv_python()).arg(script).args(args).output().expect("the venv's python")
    })
    .await
    .unwrap();
    assert!(run.status.success(), "the browser script failed: {}", String::from_utf8_lossy(&run.stderr));
    (serde_json::from_slice(&run.stdout).unwrap(), screenshot)
}

/// The community's loop on the pages, in Chromium at phone width: a 👎 with a reason on
/// the chat page, its count and the answer in the review queue on the quality page, a
/// correction saved from the queue as a gold case.
#[tokio::test(flavor = "multi_thread")]
async fn a_vote_on_the_chat_page_shows_on_the_quality_page_and_a_correction_there_becomes_gold() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!("server:\n  listen: 127.0.0.1:{port}\n{}", sample_kb());
    let daemon = TelegramDaemon::start(dir.path(), &config, "bees", "").await;
    let question = "Where can visitors park their cars?";
    let (seen, screenshot) =
        in_chromium("quality_page.py", &format!("http://127.0.0.1:{port}"), question, "quality-page").await;

    assert_eq!(seen["after_vote"], "Thanks. What was wrong?", "{seen}");
    assert_eq!(seen["after_reason"], "Thanks: noted what was wrong.", "{seen}");
    assert_eq!(seen["pressed"], "true", "{seen}");
    let totals = seen["totals"][0].as_str().unwrap();
    assert!(totals.starts_with("1 question:") && totals.contains("👎 1") && totals.contains("👍 0"), "{seen}");
    assert!(seen["charts"].as_u64().unwrap() >= 2, "the day's bars are drawn: {seen}");
    assert!(seen["gaps"][0].as_str().unwrap().contains(question), "a voted-down question is a gap: {seen}");
    assert_eq!(seen["review_questions"], serde_json::json!([question]), "{seen}");
    assert!(seen["review_comments"][0].as_str().unwrap().contains("does not say where to park"), "{seen}");
    assert_eq!(seen["fits_the_width"], true, "readable on a phone-sized screen: {seen}");
    assert_eq!(seen["saved"], serde_json::json!(["Saved as a gold question."]), "{seen}");
    assert!(seen["review_after"][0].as_str().unwrap().contains("Nothing to review"), "{seen}");
    assert!(std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 1000), "a screenshot for people");

    let feedback = daemon.app.feedback().unwrap();
    let gold = feedback.gold(Some("docs"), None).await.unwrap();
    let case = gold.iter().map(|g| g.case()).next().expect("a gold case");
    assert_eq!(case.question, question);
    assert_eq!((case.answer.as_deref(), case.source.as_deref()), (Some("Behind the town hall"), Some("parking.md")));
    let votes = feedback.votes(Some("docs"), None).await.unwrap();
    assert_eq!(votes.len(), 1, "the 👎 and its reason are one vote");
    assert_eq!(votes[0].comment.as_deref(), Some("It does not say where to park"));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chat_page_streams_an_answer_with_its_source_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!("server:\n  listen: 127.0.0.1:{port}\n{}", sample_kb());
    let quoting = "    retrieval:\n      quote_evidence: true\n";
    let daemon = TelegramDaemon::start(dir.path(), &config, "bees", quoting).await;
    let (seen, screenshot) =
        in_chromium("chat_page.py", &format!("http://127.0.0.1:{port}/"), QUESTION, "chat-page").await;

    assert_eq!(seen["bots"], serde_json::json!(["docs"]));
    assert_eq!(seen["questions"], serde_json::json!([QUESTION]));
    assert_eq!(seen["errors"], serde_json::json!([]), "{seen}");
    let answer = seen["answer"].as_str().unwrap();
    assert!(answer.to_lowercase().contains("dance"), "{seen}");
    assert!(!answer.contains("Sources:"), "the sources are listed apart: {answer}");
    assert!(seen["sources"][0].as_str().unwrap().contains("honeybees.md"), "{seen}");
    let growth = seen["answer_lengths_while_streaming"].as_array().unwrap();
    assert!(growth.len() >= 2, "the answer grew as it streamed: {seen}");
    assert_eq!(seen["focus_back_in_question"], true, "ready for the next question from the keyboard");
    assert_eq!(seen["fits_the_width"], true, "readable on a phone-sized screen");
    assert!(std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 1000), "a screenshot for people");
    // The source opens the passage used, named without the server's folders, with the
    // quoted evidence marked in it.
    let title = seen["passage_title"].as_str().unwrap_or_default();
    assert!(title.starts_with("honeybees.md (") && !title.contains('/'), "{seen}");
    let marked = seen["passage_marked"][0].as_str().unwrap_or_default();
    assert!(marked.len() > 10 && seen["passage_text"].as_str().unwrap().contains(marked), "{seen}");
    let words = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words(answer).contains(&words(marked)), "the marked sentence is the quoted one: {seen}");

    // Each message and source takes its own direction (`dir="auto"`): the Hebrew question
    // right to left beside the English one, each answer and source by its first letter.
    let d = &seen["directions"];
    assert_eq!(d["question_box"], "auto", "{d}");
    let questions = d["questions"].as_array().unwrap();
    assert_eq!(questions.len(), 2, "{d}");
    assert_eq!((&questions[0][0], &questions[0][1]), (&serde_json::json!("auto"), &serde_json::json!("ltr")), "{d}");
    assert_eq!((&questions[1][0], &questions[1][1]), (&serde_json::json!("auto"), &serde_json::json!("rtl")), "{d}");
    let shown = d["answers"].as_array().unwrap().iter().chain(d["sources"].as_array().unwrap());
    for [dir, resolved, text] in shown.map(|e| [&e[0], &e[1], &e[2]]) {
        assert_eq!(dir, "auto", "{d}");
        let first_letter = text.as_str().unwrap().chars().find(|c| c.is_alphabetic());
        let rtl = first_letter.is_some_and(|c| ('\u{0590}'..='\u{08FF}').contains(&c));
        assert_eq!(resolved, if rtl { "rtl" } else { "ltr" }, "{d}");
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_past_the_grace_ends_an_api_stream_with_a_restarting_error() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!("shutdown_grace_seconds: 0\nserver:\n  listen: 127.0.0.1:{port}\n{}", sample_kb());
    let mut daemon = TelegramDaemon::start(dir.path(), &config, "bees", "").await;
    let body =
        serde_json::json!({"model": "docs", "stream": true, "messages": [{"role": "user", "content": QUESTION}]});
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    // The headers come with the first token: the answer is under way.
    let mut response = client.post(url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    daemon.stop_signal();
    let mut streamed = String::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        streamed.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(streamed.contains("\"code\":\"restarting\"") && streamed.contains("ask again"), "{streamed}");
    assert!(!streamed.contains("[DONE]"), "cut short, not finished: {streamed}");
    daemon.exit().await.expect("exit code 0");
}
