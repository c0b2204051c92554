//! The feedback loop on Telegram through the real `lore run` and the real models: an
//! answer's 👍/👎 buttons, a click after a restart that still lands its vote, `/correct`
//! refused to a non-admin and made a gold case for an admin, and `lore gold export`
//! feeding `lore eval --gold`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lore_tests::daemon::sample_kb;
use lore_tests::fake_telegram::{strip_tags, Chat, FakeTelegram};
use lore_tests::models::config;
use lore_tests::{lore_binary, wait_until};

const TOKEN: &str = "123456:fake-telegram-token";
/// Asks and votes; no admin.
const ANN: i64 = 42;
/// The bot's admin.
const BOB: i64 = 43;
const GROUP: Chat = Chat::Group(-100_700);
const QUESTION: &str = "How do honeybees tell each other where flowers are?";
/// Loading the models and answering on two busy cores.
const SLOW: Duration = Duration::from_secs(180);

/// A `lore run`, killed if the test ends before it is stopped.
struct Daemon(Child);

impl Daemon {
    fn start(config: &Path, log: &Path) -> Self {
        let child =
            lore(config).arg("run").stdout(Stdio::null()).stderr(std::fs::File::create(log).unwrap()).spawn().unwrap();
        Self(child)
    }

    /// Stops it as a service manager would (SIGTERM), and checks it stops cleanly.
    fn stop(mut self) {
        let sent = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status().unwrap();
        assert!(sent.success(), "kill -TERM failed");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                break status;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "lore did not stop within 60 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "lore run ended with {status}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lore(config: &Path) -> Command {
    let mut command = Command::new(lore_binary());
    command.arg("--config").arg(config).env("LORE_TEST_TELEGRAM_TOKEN", TOKEN);
    command
}

fn lore_ok(config: &Path, args: &[&str]) -> String {
    let Output { status, stdout, stderr } = lore(config).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(status.success(), "lore {args:?}: {status}\n{stderr}");
    String::from_utf8(stdout).unwrap()
}

/// The bot's messages in the group as people see them, once there are `count`.
async fn group_messages(fake: &FakeTelegram, count: usize, what: &str) -> Vec<String> {
    let shown = || fake.shown_in(GROUP.id()).iter().map(|m| strip_tags(m)).collect::<Vec<_>>();
    wait_until(SLOW, what, || shown().len() >= count).await;
    shown()
}

/// The bot's newest message in the group and the id of the answer its buttons name, once it
/// has them: with the final text.
async fn answer_under(fake: &FakeTelegram) -> (i64, String) {
    let buttons = || fake.message_ids(GROUP.id()).last().map(|&id| (id, fake.buttons(GROUP.id(), id)));
    wait_until(SLOW, "the answer and its buttons", || buttons().is_some_and(|(_, b)| !b.is_empty())).await;
    let (id, buttons) = buttons().unwrap();
    let labels: Vec<&str> = buttons.iter().map(|(label, _)| label.as_str()).collect();
    assert_eq!(labels, ["👍", "👎"]);
    let answer = buttons[1].1.strip_prefix("vote:down:").expect("👎 names the answer").to_string();
    assert_eq!(buttons[0].1, format!("vote:up:{answer}"));
    (id, answer)
}

/// Waits until the daemon has kept answer `id` (written in the background once it is shown).
async fn wait_until_kept(config: &lore::config::Config, id: &str) {
    let answers = lore::app::open_store(config).await.unwrap().records("feedback.answers");
    let deadline = Instant::now() + Duration::from_secs(30);
    while answers.get(&[id.to_string()]).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "answer {id} was never kept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_telegram_vote_after_a_restart_lands_and_an_admins_correction_becomes_a_gold_case_lore_eval_scores() {
    lore_tests::init();
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeTelegram::start(TOKEN).await;
    let extra = format!(
        "{kbs}bots:\n  docs:\n    knowledge_base: bees\n    admins: [\"{BOB}\"]\n    adapter:\n      type: telegram\n      token_env: LORE_TEST_TELEGRAM_TOKEN\n      api_url: {api}\n      poll_timeout_secs: 2\n      edit_interval_ms: 300\n",
        kbs = sample_kb(),
        api = fake.api_url(),
    );
    let cfg = config(dir.path(), &extra);
    lore_ok(&cfg.file, &["ingest", "--kb", "bees"]);
    let log = |n: usize| -> PathBuf { dir.path().join(format!("run{n}.log")) };
    let starts = || fake.calls("setMyCommands").len();

    let daemon = Daemon::start(&cfg.file, &log(1));
    wait_until(SLOW, "the bot starts", || starts() == 1).await;
    fake.push_message(GROUP, ANN, &format!("/ask {QUESTION}"));
    let (message, answer) = answer_under(&fake).await;
    assert!(group_messages(&fake, 1, "the answer").await.concat().contains("honeybees.md"));
    wait_until_kept(&cfg, &answer).await;
    daemon.stop();

    // A new daemon on the same data: the click names its answer by itself.
    let daemon = Daemon::start(&cfg.file, &log(2));
    wait_until(SLOW, "the bot starts again", || starts() == 2).await;
    let query = fake.click(GROUP, message, ANN, &format!("vote:down:{answer}"));
    wait_until(SLOW, "the click is answered", || !fake.click_answers(&query).is_empty()).await;
    let thanks = fake.click_answers(&query);
    assert_eq!(thanks.len(), 1);
    assert_eq!(thanks[0]["text"], "Thanks: noted 👎.", "said once the vote is stored");

    fake.push_reply_to(GROUP, ANN, "/correct They sing.", message);
    let refused = group_messages(&fake, 2, "Ann's /correct is refused").await;
    assert_eq!(refused[1], "Sorry, only this bot's admins can do that here.");
    fake.push_reply_to(GROUP, BOB, "/correct With the waggle dance source: honeybees.md", message);
    let saved = group_messages(&fake, 3, "Bob's /correct is confirmed").await;
    assert_eq!(saved[2], format!("Saved as a gold question: \"{QUESTION}\" → \"With the waggle dance\"."));
    daemon.stop();

    let exported = lore_ok(&cfg.file, &["gold", "export", "--bot", "docs"]);
    let cases: Vec<serde_json::Value> = exported.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        cases,
        [serde_json::json!({
            "question": QUESTION, "answer": "With the waggle dance", "source": "honeybees.md", "id": answer,
        })]
    );
    let gold = dir.path().join("gold.jsonl");
    std::fs::write(&gold, &exported).unwrap();
    let report = lore_ok(&cfg.file, &["eval", "--gold", &gold.display().to_string(), "--bot", "docs", "--json"]);
    let report: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!((report["questions"].as_u64(), report["answerable"].as_u64()), (Some(1), Some(1)), "{report}");
    assert!((0.0..=1.0).contains(&report["f1"].as_f64().unwrap()), "{report}");
}
