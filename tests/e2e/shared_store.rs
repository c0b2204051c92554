//! Knowledge bases on object storage, against a real S3-compatible server (moto) on
//! 127.0.0.1: `lore ingest` (the real binary, another process) writes into `s3://…`, a
//! daemon configured elsewhere answers from it, and a re-ingest from the other place is
//! answered from without a restart. Bad storage settings are named with the URI.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lore::ingest::BATCH_CHUNKS;
use lore_tests::daemon::TelegramDaemon;
use lore_tests::fake_telegram::{strip_tags, Chat};
use lore_tests::moto::{self, Moto};
use lore_tests::wait_until;

const ANSWER: Duration = Duration::from_secs(120);
const QUESTION: &str = "Who decoded the waggle dance?";
const OLD_FACT: &str = "The Austrian scientist Karl von Frisch decoded the waggle dance in the 1940s.";
const NEW_FACT: &str = "The Danish scientist Ingrid Svalbard decoded the waggle dance in the 1940s.";

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_answers_from_an_s3_store_another_place_ingests_and_follows_a_re_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start().await;
    moto.create_bucket("lore-kb").await;
    moto::set_credentials();
    let uri = "s3://lore-kb/team/knowledge";

    // The ingesting place: the source files and a config of its own.
    let ingester = dir.path().join("ingester");
    let notes = ingester.join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    let bees = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/sample/honeybees.md");
    let text = std::fs::read_to_string(bees).unwrap();
    assert!(text.contains(OLD_FACT), "the sample changed: update OLD_FACT");
    std::fs::write(notes.join("honeybees.md"), &text).unwrap();
    // Enough one-sentence chunks for several write batches.
    let sightings: Vec<String> =
        (0..BATCH_CHUNKS + 40).map(|i| format!("Sighting {i}: a heron stood by pond number {i}.")).collect();
    std::fs::write(notes.join("sightings.md"), sightings.join("\n\n") + "\n").unwrap();
    let kbs = format!(
        "{}knowledge_bases:\n  notes:\n    sources: [{}]\n    chunking: {{max_tokens: 48, overlap_tokens: 0, unit: sentence}}\n",
        moto.storage_config(),
        notes.display()
    );
    let ingest_config = lore_tests::models::config_with_data_dir(&ingester, uri, &kbs);
    lore_ingest(&ingest_config.file);
    let kb = lore::app::open_store(&ingest_config).await.unwrap().open_kb("notes").await.unwrap().unwrap();
    assert!(kb.count().await.unwrap() > BATCH_CHUNKS + 40, "not every chunk reached the bucket");
    assert!(kb.fulltext_index_is_current().await.unwrap(), "the full-text index misses rows");

    // The serving place has no files: it knows the knowledge base by name only.
    let server = dir.path().join("server");
    let state = server.join("state");
    std::fs::create_dir_all(&server).unwrap();
    let serving = format!("{}state_dir: {}\nknowledge_bases:\n  notes: {{}}\n", moto.storage_config(), state.display());
    let daemon = TelegramDaemon::start_serving(&server, uri, &serving, "notes").await;
    let first = ask(&daemon, 7, QUESTION).await;
    assert!(first.contains("Frisch") && first.contains("honeybees.md"), "not the gold answer with its source: {first}");
    // Written just after the answer is handed over (never delaying it).
    let kept = || state.join("conversations").read_dir().is_ok_and(|mut d| d.next().is_some());
    wait_until(Duration::from_secs(10), "the conversation is kept locally", kept).await;

    // The ingesting place changes the file and ingests again; the running daemon answers
    // from the new version.
    std::fs::write(notes.join("honeybees.md"), text.replace(OLD_FACT, NEW_FACT)).unwrap();
    lore_ingest(&ingest_config.file);
    tokio::time::sleep(lore_knowledge::store::READ_CONSISTENCY + Duration::from_millis(500)).await;
    // Another chat, so the first answer is not in the conversation.
    let second = ask(&daemon, 8, QUESTION).await;
    let passages = ask(&daemon, 8, "/sources").await;
    assert!(passages.contains(NEW_FACT) && !passages.contains(OLD_FACT), "not the re-ingested text: {passages}");
    assert!(second.contains("Svalbard") && !second.contains("Frisch"), "not answered from the new text: {second}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_bucket_refused_credentials_or_an_unreachable_endpoint_is_named_with_the_uri() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start().await;
    moto.create_bucket("lore-kb").await;
    moto::set_credentials();

    let error = open_error(dir.path(), "s3://no-such-bucket/kb", &moto.endpoint).await;
    assert!(error.contains("s3://no-such-bucket/kb") && error.contains("bucket does not exist"), "{error}");

    let closed = format!("http://127.0.0.1:{}", lore_tests::free_port());
    let started = std::time::Instant::now();
    let error = open_error(dir.path(), "s3://lore-kb/kb", &closed).await;
    assert!(error.contains("s3://lore-kb/kb") && error.contains("cannot be reached"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?} to give up", started.elapsed());

    let strict = Moto::start_checking_credentials().await;
    let error = open_error(dir.path(), "s3://lore-kb/kb", &strict.endpoint).await;
    assert!(error.contains("s3://lore-kb/kb") && error.contains("credentials were refused"), "{error}");

    // The same store, reachable, opens.
    let extra = format!("{}knowledge_bases:\n  notes: {{}}\n", moto.storage_config());
    let config = lore_tests::models::config_with_data_dir(dir.path(), "s3://lore-kb/kb", &extra);
    assert_eq!(lore::app::open_store(&config).await.unwrap().names().await.unwrap(), Vec::<String>::new());
}

/// The error that opening the knowledge bases at `uri` through the server at `endpoint`
/// ends in.
async fn open_error(dir: &Path, uri: &str, endpoint: &str) -> String {
    let extra = format!("{}knowledge_bases:\n  notes: {{}}\n", moto::storage_config(endpoint));
    let config = lore_tests::models::config_with_data_dir(dir, uri, &extra);
    match lore::app::open_store(&config).await {
        Ok(_) => panic!("{uri} through {endpoint} opened"),
        Err(error) => error.to_string(),
    }
}

/// Runs `lore ingest --kb notes` with `config` and its own process, as another machine
/// would.
fn lore_ingest(config: &Path) {
    let output = Command::new(lore_tests::lore_binary())
        .args(["--config", &config.display().to_string(), "ingest", "--kb", "notes"])
        .envs(moto::CREDENTIALS)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "lore ingest failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Sends `text` in private chat `chat` and returns the reply once complete: an answer with
/// its sources, or a command's reply.
async fn ask(daemon: &TelegramDaemon, chat: i64, text: &str) -> String {
    let before = daemon.fake.shown_in(chat).len();
    daemon.fake.push_message(Chat::Private(chat), chat, text);
    let shown = || daemon.fake.shown_in(chat).get(before).map(|m| strip_tags(m));
    let abstained = &daemon.app.config.retrieval.abstain_text;
    let done = |m: &String| text.starts_with('/') || m.contains("Sources") || m == abstained;
    wait_until(ANSWER, &format!("a reply to {text:?}"), || shown().is_some_and(|m| done(&m))).await;
    shown().unwrap()
}
