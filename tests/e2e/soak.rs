//! The soak run behind `scripts/soak`: the real `lore` binary answers mixed traffic from
//! both fake platforms for `LORE_SOAK_MINUTES` (default 10) while faults are injected, then
//! stops on a real SIGTERM. It prints what happened to every question and fails if one was
//! lost, answered twice or left half-shown. Ignored in the normal suite (it takes minutes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::Method;
use lore::question::router::RESTARTING;
use lore_tests::fake_discord::{self, FakeDiscord};
use lore_tests::fake_telegram::{self, strip_tags, Chat, FakeTelegram};
use lore_tests::models::{embedder_path, generator_path};
use lore_tests::wait_until;

const TELEGRAM_TOKEN: &str = "123456:soak-telegram-token";
const ABSTAIN: &str = "Not in my notes.";
const QUESTIONS: [&str; 8] = [
    "How do honeybees tell each other where the flowers are?",
    "What does the queen bee do?",
    "How do bees make honey?",
    "Why do bees dance?",
    "What do worker bees do in the hive?",
    "How do bees keep the hive warm in winter?",
    "What is the capital of Australia?",
    "Who wrote the Iliad?",
];

/// A small, seedable source of randomness: the run is the same for the same seed.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A wait with mean `mean`, as arrivals of independent askers have.
    fn arrival(&mut self, mean: Duration) -> Duration {
        let uniform = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        mean.mul_f64(-(1.0 - uniform).ln()).min(mean * 6)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Platform {
    Telegram,
    Discord,
}

/// How one question ended, as its asker saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ending {
    Answered,
    Abstained,
    /// A refusal in words (the line was full, too many questions).
    Refused,
    /// The restart note.
    AskAgain,
    Lost,
    Duplicated,
    /// One message, but not a final text: a partial left behind.
    Partial,
}

fn ending(shown: &[String]) -> Ending {
    match shown {
        [] => Ending::Lost,
        [one] if one.contains("Sources") => Ending::Answered,
        [one] if one.trim() == ABSTAIN => Ending::Abstained,
        [one] if one.trim() == RESTARTING => Ending::AskAgain,
        [one] if one.starts_with("Sorry") => Ending::Refused,
        [_] => Ending::Partial,
        _ => Ending::Duplicated,
    }
}

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn rss_mib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .map_or(0, |kib| kib / 1024)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Sends SIGTERM and waits; returns the exit code and how long stopping took.
    fn terminate(mut self) -> (Option<i32>, Duration, PathBuf) {
        let started = Instant::now();
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(sent.success(), "kill -TERM failed");
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), started.elapsed(), self.log);
            }
            assert!(started.elapsed() < Duration::from_secs(120), "lore did not stop within 120 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn lore(bin: &Path, config: &Path, args: &[&str], log: &Path) -> Command {
    let mut command = Command::new(bin);
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .env("LORE_SOAK_TELEGRAM_TOKEN", TELEGRAM_TOKEN)
        .env("LORE_SOAK_DISCORD_TOKEN", "soak-discord-token")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    command
}

fn config(dir: &Path, telegram: &FakeTelegram, discord: &FakeDiscord) -> PathBuf {
    let bees = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/sample/honeybees.md");
    let text = format!(
        "data_dir: {data}
shutdown_grace_seconds: 20
models:
  generator:
    path: {generator}
    context_tokens: 2048
    max_answer_tokens: 96
  embedder:
    path: {embedder}
retrieval:
  abstain_text: {ABSTAIN:?}
knowledge_bases:
  bees:
    sources: [{bees}]
bots:
  telegram:
    knowledge_base: bees
    adapter:
      type: telegram
      token_env: LORE_SOAK_TELEGRAM_TOKEN
      api_url: {telegram_url}
      poll_timeout_secs: 2
      edit_interval_ms: 300
  discord:
    knowledge_base: bees
    adapter:
      type: discord
      token_env: LORE_SOAK_DISCORD_TOKEN
      api_url: {discord_url}
      edit_interval_ms: 300
      request_timeout_secs: 3
",
        data = dir.join("data").display(),
        generator = generator_path().display(),
        embedder = embedder_path().display(),
        bees = bees.display(),
        telegram_url = telegram.api_url(),
        discord_url = discord.api_url(),
    );
    let file = dir.join("lore.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

/// One fault, injected now; returns its name for the table.
fn inject(dice: &mut Dice, telegram: &FakeTelegram, discord: &FakeDiscord) -> &'static str {
    use fake_discord::Fault as D;
    use fake_telegram::Fault as T;
    let messages = "/messages";
    match dice.below(12) {
        0 => {
            telegram.inject("editMessageText", 2, T::RetryAfter(1 + dice.below(3) as u32));
            "Telegram 429 on edits"
        }
        1 => {
            telegram.inject("sendMessage", 1, T::RetryAfter(2));
            "Telegram 429 on a send"
        }
        2 => {
            telegram.inject(if dice.below(2) == 0 { "sendMessage" } else { "editMessageText" }, 1, T::ServerError(502));
            "Telegram 5xx on a send or edit"
        }
        3 => {
            telegram.inject(if dice.below(2) == 0 { "sendMessage" } else { "editMessageText" }, 1, T::Hang);
            "Telegram timeout on a send or edit"
        }
        4 => {
            telegram.inject("getUpdates", 1, T::Drop);
            "Telegram long poll broken"
        }
        5 => {
            telegram.inject("editMessageText", 1, T::Drop);
            "Telegram connection dropped on an edit"
        }
        6 => {
            discord.inject(Method::PATCH, messages, 2, D::RateLimited(0.5 + dice.below(20) as f64 / 10.0));
            "Discord 429 on edits (via the proxy)"
        }
        7 => {
            discord.inject(Method::POST, messages, 1, D::RateLimited(1.5));
            "Discord 429 on a post (via the proxy)"
        }
        8 => {
            discord.inject(
                if dice.below(2) == 0 { Method::POST } else { Method::PATCH },
                messages,
                1,
                D::ServerError(503),
            );
            "Discord 5xx on a post or edit"
        }
        9 => {
            discord.inject(if dice.below(2) == 0 { Method::POST } else { Method::PATCH }, messages, 1, D::Hang);
            "Discord timeout on a post or edit"
        }
        10 => {
            discord.inject(Method::POST, messages, 1, D::LostResponse);
            "Discord post made, response lost"
        }
        _ => {
            discord.drop_gateway();
            "Discord gateway dropped"
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "minutes long: run by scripts/soak"]
async fn soak() {
    lore_tests::init();
    let minutes: f64 = std::env::var("LORE_SOAK_MINUTES").ok().and_then(|m| m.parse().ok()).unwrap_or(10.0);
    let bin = PathBuf::from(std::env::var("LORE_BIN").expect("LORE_BIN: the lore binary to soak"));
    let dir = tempfile::tempdir().unwrap();
    let telegram = FakeTelegram::start(TELEGRAM_TOKEN).await;
    let discord = FakeDiscord::start().await;
    let config = config(dir.path(), &telegram, &discord);
    let ingest_log = dir.path().join("ingest.log");
    let ingested = lore(&bin, &config, &["ingest", "--kb", "bees"], &ingest_log).status().unwrap();
    assert!(ingested.success(), "ingest failed: {}", std::fs::read_to_string(&ingest_log).unwrap_or_default());

    let log = std::env::var("LORE_SOAK_LOG").map(PathBuf::from).unwrap_or_else(|_| dir.path().join("lore.log"));
    let child = lore(&bin, &config, &["run"], &log).spawn().unwrap();
    let daemon = Daemon { child, log };
    wait_until(Duration::from_secs(120), "both bots are connected", || {
        !telegram.calls("setMyCommands").is_empty() && discord.gateway_live()
    })
    .await;
    let (rss_start, _) = daemon.rss_mib();

    let mut dice = Dice(std::env::var("LORE_SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5EED));
    let mut asked: Vec<(Platform, u64)> = Vec::new();
    let mut faults: BTreeMap<&str, usize> = BTreeMap::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(minutes * 60.0);
    let mut next_fault = started + Duration::from_secs(10);
    while Instant::now() < deadline {
        // Now and then a burst, as when a channel wakes up.
        let burst = if dice.below(20) == 0 { 5 } else { 1 };
        for _ in 0..burst {
            let n = asked.len() as u64;
            let question = QUESTIONS[dice.below(QUESTIONS.len() as u64) as usize];
            if dice.below(2) == 0 {
                let user = 10_000 + n as i64;
                telegram.push_message(Chat::Private(user), user, question);
                asked.push((Platform::Telegram, user as u64));
            } else {
                let channel = 50_000 + n;
                discord.send(discord.message(channel, 60_000 + n, question));
                asked.push((Platform::Discord, channel));
            }
        }
        if Instant::now() >= next_fault {
            *faults.entry(inject(&mut dice, &telegram, &discord)).or_default() += 1;
            next_fault = Instant::now() + Duration::from_secs(10) + dice.arrival(Duration::from_secs(10));
        }
        tokio::time::sleep(dice.arrival(Duration::from_secs(4))).await;
    }

    let shown = |(platform, chat): (Platform, u64)| -> Vec<String> {
        match platform {
            Platform::Telegram => telegram.shown_in(chat as i64).iter().map(|m| strip_tags(m)).collect(),
            Platform::Discord => discord.shown_in(chat),
        }
    };
    // Every answer started may take a while to end (a timeout and a few retries).
    let settled =
        |q: &(Platform, u64)| matches!(ending(&shown(*q)), Ending::Answered | Ending::Abstained | Ending::Refused);
    let waited = Instant::now();
    while !asked.iter().all(settled) && waited.elapsed() < Duration::from_secs(180) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (rss_end, rss_peak) = daemon.rss_mib();
    let (code, stopping, log) = daemon.terminate();

    let mut endings: BTreeMap<(Platform, Ending), usize> = BTreeMap::new();
    let mut bad = Vec::new();
    for q in &asked {
        let end = ending(&shown(*q));
        *endings.entry((q.0, end)).or_default() += 1;
        if matches!(end, Ending::Lost | Ending::Duplicated | Ending::Partial) {
            bad.push((*q, end, shown(*q)));
        }
    }
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let count = |level: &str| log_text.lines().filter(|l| l.contains(level)).count();

    println!("\n== soak: {minutes} min, {} questions ==", asked.len());
    for ((platform, end), n) in &endings {
        println!("{platform:?} {end:?}: {n}");
    }
    println!("faults injected:");
    for (fault, n) in &faults {
        println!("  {fault}: {n}");
    }
    println!("daemon RSS: {rss_start} MiB after start, {rss_end} MiB at the end, {rss_peak} MiB peak");
    println!("daemon log: {} ERROR lines, {} WARN lines", count(" ERROR "), count(" WARN "));
    println!("SIGTERM: exit code {code:?} after {:.1} s", stopping.as_secs_f64());
    for (q, end, shown) in &bad {
        println!("BAD {q:?} {end:?}: {shown:?}");
    }
    assert_eq!(code, Some(0), "exit code on SIGTERM");
    assert!(bad.is_empty(), "{} questions lost, duplicated or left half-shown", bad.len());
}
