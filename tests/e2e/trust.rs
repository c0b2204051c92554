//! Answers people can trust, on the real default models: a calibrated "I don't know" that
//! points to what the knowledge base does cover, quotes verified against their passage,
//! and `lore calibrate` fitting a bot's own confidence from its gold questions.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lore_tests::daemon::{sample_kb, TelegramDaemon};
use lore_tests::fake_telegram::{strip_tags, Chat};
use lore_tests::models::config;
use lore_tests::wait_until;

const ASKER: i64 = 42;

/// The calibration shipped for the default models (`config/calibration.json`).
fn shipped_calibration() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/calibration.json")
}

/// Words of `text`, lower-cased, for comparing a quote with its source whatever the
/// line breaks.
fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_off_topic_question_is_declined_with_a_hint_and_an_on_topic_one_comes_with_a_verified_quote() {
    let dir = tempfile::tempdir().unwrap();
    let bot = format!(
        "    retrieval:\n      answer_style: verified\n      abstain:\n        calibration: {}\n        instead: quote\n",
        shipped_calibration().display()
    );
    let daemon = TelegramDaemon::start(dir.path(), &sample_kb(), "bees", &bot).await;
    let fake = &daemon.fake;
    let reply = |count: usize| {
        let shown = fake.shown_in(ASKER);
        shown.get(count - 1).map(|m| strip_tags(m))
    };

    fake.push_message(Chat::Private(ASKER), ASKER, "Who won the football world cup in 1998?");
    wait_until(Duration::from_secs(120), "the off-topic answer", || reply(1).is_some_and(|m| m.contains("nearest")))
        .await;
    let declined = reply(1).unwrap();
    assert!(declined.starts_with("I don't know"), "{declined}");
    assert!(declined.contains("honeybees.md") && declined.contains("try asking about that"), "{declined}");
    assert!(!declined.contains('/'), "no server path shown: {declined}");

    fake.push_message(Chat::Private(ASKER), ASKER, "How do honeybees tell each other where flowers are?");
    wait_until(Duration::from_secs(180), "the on-topic answer", || reply(2).is_some_and(|m| m.contains("Sources")))
        .await;
    let answered = reply(2).unwrap();
    // Shown under a supported answer ("Evidence [1]: “…”") or, when the answer is
    // withheld, as the closest passage ("says: “…”"): verified either way.
    let quote = answered
        .split('“')
        .nth(1)
        .and_then(|rest| rest.split('”').next())
        .unwrap_or_else(|| panic!("a quote in {answered}"));
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/sample/honeybees.md")).unwrap();
    assert!(words(&source).contains(&words(quote)), "the quote {quote:?} stands in honeybees.md");
    assert!(answered.contains("honeybees.md") && !answered.contains("/config/"), "{answered}");
    daemon.stop().await;
}

const ZAB: &str = "# The island of Zab

Zab is a small island in the North Sea. About three hundred people live there all year.

The Zab lighthouse stands on the northern cliff. It is painted violet from base to lantern.

The ferry to Zab leaves from Harlingen every Tuesday and Friday at nine in the morning.

The island's only school is called Seagull School. Forty-one pupils go there.

The main crop on Zab is potatoes. The farmers also keep sheep for their wool.

The harbour master of Zab is Greta Vos. She has kept the harbour for twenty years.

Every August the islanders hold a kite festival on the southern beach.
";

/// Questions with their answers in `ZAB`, and questions it does not answer.
const GOLD: &str = r#"{"question": "What colour is the Zab lighthouse painted?", "answer": "violet", "source": "zab.md"}
{"question": "Where does the lighthouse of Zab stand?", "answer": "on the northern cliff", "source": "zab.md"}
{"question": "From which town does the ferry to Zab leave?", "answer": "Harlingen", "source": "zab.md"}
{"question": "What is the name of the school on Zab?", "answer": "Seagull School"}
{"question": "What is the main crop on Zab?", "answer": "potatoes"}
{"question": "Why do the farmers of Zab keep sheep?", "answer": "for their wool"}
{"question": "Who is the harbour master of Zab?", "answer": "Greta Vos"}
{"question": "In which sea is the island of Zab?", "answer": "the North Sea"}
{"question": "When do the islanders hold their kite festival?", "answer": "every August"}
{"question": "Where is the kite festival held?", "answer": "on the southern beach"}
{"question": "On which days does the ferry to Zab leave?", "answer": "Tuesday and Friday"}
{"question": "At what time does the ferry to Zab leave?", "answer": "nine in the morning"}
{"question": "Who won the football world cup in 1998?", "answer": null}
{"question": "What is the capital city of Japan?", "answer": null}
{"question": "How do you bake sourdough bread?", "answer": null}
{"question": "Which programming language was Linux written in?", "answer": null}
{"question": "What is the name of the airport on Zab?", "answer": null}
{"question": "Who painted the lighthouse on Zab?", "answer": null}
"#;

/// Runs the `lore` binary on `config`: its exit code, standard output and standard error.
fn lore(config: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(lore_tests::lore_binary())
        .args(["--config", &config.display().to_string()])
        .args(args)
        .output()
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn lore_calibrate_fits_a_bots_gold_questions_and_the_daemon_then_judges_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join("zab.md"), ZAB).unwrap();
    std::fs::write(dir.path().join("gold.jsonl"), GOLD).unwrap();
    let calibration = dir.path().join("zab-calibration.json");
    let extra = format!(
        "knowledge_bases:\n  zab:\n    sources: [{notes}]\nbots:\n  docs:\n    knowledge_base: zab\n    adapter: {{type: console}}\n    retrieval:\n      abstain: {{calibration: {cal}}}\n",
        notes = notes.display(),
        cal = calibration.display(),
    );
    // Written before the calibration exists: the config is read by the binary below, and
    // `lore calibrate` needs no calibration of its own to start.
    let cfg = config(dir.path(), &extra.replace("      abstain: {calibration: ", "      # abstain: {calibration: "));
    let lore = |config: &Path, args: &[&str]| {
        let (code, stdout, stderr) = lore(config, args);
        (code == Some(0), stdout + &stderr)
    };
    let (ok, ingested) = lore(&cfg.file, &["ingest", "--kb", "zab"]);
    assert!(ok, "{ingested}");
    let gold = dir.path().join("gold.jsonl");
    let (ok, fitted) = lore(
        &cfg.file,
        &[
            "calibrate",
            "--bot",
            "docs",
            "--gold",
            &gold.display().to_string(),
            "--out",
            &calibration.display().to_string(),
        ],
    );
    assert!(ok, "{fitted}");
    assert!(fitted.contains("18 questions") && fitted.contains("risk–coverage"), "{fitted}");
    let written = lore::question::confidence::Calibration::load(&calibration).unwrap();
    assert!(written.combiners.iter().any(|c| c.stage == lore::question::confidence::Stage::After), "{written:?}");
    assert!(written.fitted_with.data.iter().any(|d| d.contains("gold.jsonl")), "{:?}", written.fitted_with);

    // The daemon now judges by it.
    let judged = config(dir.path(), &extra);
    let (ok, checked) = lore(&judged.file, &["check"]);
    assert!(ok, "{checked}");
    assert!(
        checked.contains("bot docs: answers judged by calibration") && checked.contains("zab-calibration.json"),
        "{checked}"
    );
    assert!(!checked.contains("warning"), "fitted with these very models: {checked}");
    let (ok, declined) = lore(&judged.file, &["ask", "--bot", "docs", "What is the capital city of Japan?"]);
    assert!(ok && declined.contains("I don't know") && declined.contains("zab.md"), "{declined}");
}

/// `lore eval --gold` asks a bot's gold questions through its own chain and reports exact
/// match, F1, abstention and citation figures; `--baseline` with a deliberately worse
/// config (a bot that declines everything) fails naming the figure that dropped, and
/// passes within a wide enough `--max-drop`.
#[test]
fn lore_eval_gold_scores_a_bots_questions_and_a_worse_config_fails_against_the_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join("zab.md"), ZAB).unwrap();
    let gold = dir.path().join("gold.jsonl");
    std::fs::write(&gold, GOLD).unwrap();
    let bot = |retrieval: &str| {
        format!(
            "knowledge_bases:\n  zab:\n    sources: [{}]\nbots:\n  docs:\n    knowledge_base: zab\n    adapter: {{type: console}}\n{retrieval}",
            notes.display()
        )
    };
    let config_file = dir.path().join("lore.yaml");
    let lore = |args: &[&str]| lore(&config_file, args);
    let good = config(dir.path(), &bot(""));
    let (code, _, err) = lore(&["ingest", "--kb", "zab"]);
    assert_eq!(code, Some(0), "{err}");
    let gold_arg = gold.display().to_string();
    let (code, report, err) = lore(&["eval", "--gold", &gold_arg, "--bot", "docs", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let base: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(
        (base["questions"].as_u64(), base["answerable"].as_u64(), base["no_answer"].as_u64()),
        (Some(18), Some(12), Some(6)),
        "{base}"
    );
    let f1 = base["f1"].as_f64().unwrap();
    assert!(
        f1 > 0.05,
        "some answers overlap the gold ones (the bot answers in sentences, so exact match is rare): {base}"
    );
    for key in ["exact", "abstention_accuracy", "answered"] {
        assert!((0.0..=1.0).contains(&base[key].as_f64().unwrap()), "{key}: {base}");
    }
    eprintln!("gold report: {base}");
    let baseline = dir.path().join("baseline.json");
    std::fs::write(&baseline, &report).unwrap();

    // The same bot declining everything: F1 falls to 0.
    let worse = config(dir.path(), &bot("    retrieval:\n      min_score: 0.99\n"));
    assert_eq!(worse.file, good.file);
    let baseline_arg = baseline.display().to_string();
    let (code, out, err) = lore(&["eval", "--gold", &gold_arg, "--bot", "docs", "--baseline", &baseline_arg]);
    assert_eq!(code, Some(1), "a drop fails the gate: {out}{err}");
    assert!(err.contains("f1 dropped from") && err.contains("baseline.json"), "{err}");
    assert!(out.contains("gold questions") && out.contains("F1 0.000"), "the report is printed first: {out}");
    let gate = ["eval", "--gold", &gold_arg, "--bot", "docs", "--baseline", &baseline_arg, "--max-drop", "1"];
    let (code, _, err) = lore(&gate);
    assert_eq!(code, Some(0), "within --max-drop 1 nothing fails: {err}");
}

/// Every quote `lore eval --answer-style quote` shows for 100 questions spread over each
/// of the shared SQuAD articles (every question of both takes minutes on 2 busy cores)
/// stands word for word (case and line breaks aside) in its article.
#[test]
fn every_quote_shown_on_both_articles_stands_word_for_word_in_its_article() {
    for file in ["squad-v2/normans.json", "squad-v2/computational_complexity_theory.json"] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "");
        let details = dir.path().join("details.jsonl");
        let out = Command::new(lore_tests::lore_binary())
            .args([
                "--config",
                &cfg.file.display().to_string(),
                "eval",
                "--answer-style",
                "quote",
                "--no-rerank",
                "--json",
            ])
            .arg("--squad")
            .arg(lore_tests::models::shared_data(file))
            .arg("--details")
            .arg(&details)
            .arg("--predictions")
            .arg(dir.path().join("predictions.json"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (_, paragraphs) = lore_tests::models::squad_article_text(file, dir.path());
        let article = words(&paragraphs.join("\n\n"));
        let lines: Vec<serde_json::Value> =
            std::fs::read_to_string(&details).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let quotes: Vec<&str> = lines.iter().filter_map(|l| l["quote"].as_str()).collect();
        assert!(quotes.len() * 10 >= lines.len() * 9, "{file}: {} quotes for {} questions", quotes.len(), lines.len());
        for quote in &quotes {
            assert!(article.contains(&words(quote)), "{file}: {quote:?} is not in the article");
        }
    }
}
