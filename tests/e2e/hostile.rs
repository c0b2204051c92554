//! Hostile documents cannot take Lore down (tests/src/hostile.rs makes them). The real
//! `lore ingest`, under an address-space limit, skips each in words and answers from the
//! honest file beside them; `lore run` watching their folder stays up through its start-up
//! re-ingest and a hostile file dropped in while it runs; random and mutated documents of
//! every format, read through the same sandbox, end as blocks or a named skip.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lore::config::ParsingLimits;
use lore::ingest::files::blocks_of;
use lore::ingest::sandbox::Sandbox;
use lore::ingest::SkipReason;
use lore_documents::Format;
use lore_knowledge::KbStore;
use lore_tests::fake_telegram::{strip_tags, Chat, FakeTelegram};
use lore_tests::hostile::*;
use lore_tests::models::config;
use lore_tests::{lore_binary, wait_until};
use proptest::prelude::*;

/// What a parse may take here: small, so the bombs go off quickly (and time enough for 5 s
/// of CPU on a busy machine).
const LIMITS: &str = "parsing:\n  memory_mib: 256\n  cpu_secs: 5\n  timeout_secs: 120\n";

/// The address space `lore ingest` and `lore run` get: the models, LanceDB and the runtime
/// fit (about 1.2 GiB is enough), the 3 GiB the inflate bomb expands to does not.
const ADDRESS_SPACE: u64 = 2 << 30;

/// Each hostile file the daemon skips, and the words that say why.
const SKIPPED: [(&str, &str); 7] = [
    (SELF_PARENT, "could not be read safely (the parser crashed: stack overflow)"),
    (SELF_DRAWING_FORM, "could not be read safely (the parser crashed: stack overflow)"),
    (INFLATE_BOMB, "could not be read safely (it used more than 256 MiB of memory; parsing.memory_mib)"),
    (REPEATED_CONTENTS, "could not be read safely (it used more than 256 MiB of memory; parsing.memory_mib)"),
    (NESTED_DIVS, "could not be read safely (it used more than 5 s of CPU; parsing.cpu_secs)"),
    (FIFO, "a FIFO (named pipe), not a regular file; left unopened"),
    (GROWING, "max_file_bytes (16.0 MiB)"),
];

/// `lore` with `args`, under the address-space limit (util-linux's `prlimit`).
fn limited_lore(config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("prlimit");
    command.arg(format!("--as={ADDRESS_SPACE}")).arg(lore_binary()).arg("--config").arg(config).args(args);
    command
}

/// The warning that names `file` skipped, from a log.
fn skip_line<'a>(log: &'a str, file: &Path) -> Option<&'a str> {
    let named = format!("skipped {}", file.display());
    log.lines().find(|l| l.contains(&named))
}

#[test]
fn lore_ingest_skips_each_hostile_document_in_words_and_answers_from_the_honest_one() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().canonicalize().unwrap().join("docs");
    write_corpus(&docs);
    // Still growing when read, and already past the limit (when it passes the limit
    // during the read is the unit test's `a_file_that_grows_while_it_is_read_…`).
    let _grower = Grower::start(docs.join(GROWING), 64 << 20);
    while std::fs::metadata(docs.join(GROWING)).unwrap().len() <= 16 << 20 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let kb = format!(
        "{LIMITS}knowledge_bases:\n  hostile:\n    sources: [{}]\n    max_file_bytes: 16777216\n",
        docs.display()
    );
    let config = config(dir.path(), &kb).file;

    let ingest = limited_lore(&config, &["ingest", "--kb", "hostile"]).output().expect("prlimit (util-linux)");
    let (out, log) = (String::from_utf8_lossy(&ingest.stdout), String::from_utf8_lossy(&ingest.stderr));
    assert!(ingest.status.success(), "lore ingest failed: {}\n{log}", ingest.status);
    for (name, words) in SKIPPED {
        let line = skip_line(&log, &docs.join(name)).unwrap_or_else(|| panic!("{name} is not named skipped:\n{log}"));
        assert!(line.contains(words), "{name}: {line}");
    }
    assert!(out.contains("7 skipped: 1 too large, 1 not a regular file, 5 could not be read safely"), "{out}");
    // The deep page and the DOCX of many styles are read: neither is hostile any more.
    assert!(out.contains("9 files (0 unchanged, 3 changed"), "{out}");

    let ask = Command::new(lore_binary())
        .arg("--config")
        .arg(&config)
        .args(["ask", "--kb", "hostile", HONEST_QUESTION])
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&ask.stdout);
    assert!(ask.status.success(), "{}", String::from_utf8_lossy(&ask.stderr));
    assert!(answer.contains("Sources:") && answer.contains(HONEST), "the honest file is cited: {answer}");
}

const TOKEN: &str = "123456:fake-telegram-token";

#[tokio::test(flavor = "multi_thread")]
async fn lore_run_watching_a_hostile_folder_stays_up_and_still_answers() {
    lore_tests::init();
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().canonicalize().unwrap().join("docs");
    write_corpus(&docs);
    let fake = FakeTelegram::start(TOKEN).await;
    let extra = format!(
        "{LIMITS}knowledge_bases:\n  hostile:\n    sources: [{}]\n    watch: true\n    max_file_bytes: 16777216\n\
         bots:\n  docs:\n    knowledge_base: hostile\n    adapter:\n      type: telegram\n      token_env: LORE_TEST_TELEGRAM_TOKEN\n      api_url: {}\n      poll_timeout_secs: 2\n      edit_interval_ms: 300\n",
        docs.display(),
        fake.api_url()
    );
    let config = config(dir.path(), &extra);
    let log_file = dir.path().join("lore.log");
    let mut daemon = Running(
        limited_lore(&config.file, &["run"])
            .env("LORE_TEST_TELEGRAM_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_file).unwrap())
            .spawn()
            .expect("prlimit (util-linux)"),
    );
    let log = || std::fs::read_to_string(&log_file).unwrap_or_default();
    let data_dir = config.data_dir.folder().unwrap().to_path_buf();

    // The start-up re-ingest reads the whole corpus.
    wait_until(Duration::from_secs(120), "the bot starts", || !fake.calls("setMyCommands").is_empty()).await;
    wait_for_source(&data_dir, HONEST, &mut daemon.0, &log).await;
    for (name, words) in SKIPPED.iter().filter(|(name, _)| *name != GROWING) {
        let log = log();
        let line = skip_line(&log, &docs.join(name)).unwrap_or_else(|| panic!("{name} is not named skipped:\n{log}"));
        assert!(line.contains(words), "{name}: {line}");
    }

    // A hostile file dropped in while it runs, then an honest one: the re-ingest that
    // reads both gets past the first.
    std::fs::write(docs.join("late.pdf"), self_parent_pdf()).unwrap();
    std::fs::write(docs.join("later.md"), "# Tides\n\nThe Saltmarsh ferry waits for high tide.\n").unwrap();
    wait_for_source(&data_dir, "later.md", &mut daemon.0, &log).await;
    let late = skip_line(&log(), &docs.join("late.pdf")).map(str::to_string);
    assert!(late.is_some_and(|l| l.contains("stack overflow")), "{}", log());

    fake.push_message(Chat::Private(7), 7, HONEST_QUESTION);
    let shown = || fake.shown_in(7).first().map(|m| strip_tags(m));
    wait_until(Duration::from_secs(120), "an answer", || shown().is_some_and(|m| m.contains("Sources"))).await;
    assert!(shown().unwrap().contains(HONEST), "{:?}", shown());
    assert!(daemon.0.try_wait().unwrap().is_none(), "the daemon is still up");
}

/// A daemon process, killed when the test ends however it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until knowledge base `hostile` holds chunks of a file named `name`, failing at
/// once if the daemon ends.
async fn wait_for_source(data_dir: &Path, name: &str, daemon: &mut std::process::Child, log: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            panic!("the daemon ended ({status}):\n{}", log());
        }
        // A fresh connection sees the latest commit at once.
        if let Ok(store) = KbStore::open(data_dir).await {
            if let Ok(Some(kb)) = store.open_kb("hostile").await {
                if kb.stored_places().await.unwrap().keys().any(|s| s.ends_with(name)) {
                    return;
                }
            }
        }
        assert!(Instant::now() < deadline, "{name} was not ingested:\n{}", log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[test]
fn the_inflate_bomb_really_inflates_and_the_corpus_is_small() {
    let bomb = deflated_zeros(64 << 20);
    let mut inflated = flate2::read::ZlibDecoder::new(&bomb[..]);
    let (mut total, mut buffer) = (0u64, vec![0u8; 1 << 20]);
    loop {
        let n = inflated.read(&mut buffer).unwrap();
        if n == 0 {
            break;
        }
        assert!(buffer[..n].iter().all(|&b| b == 0));
        total += n as u64;
    }
    assert_eq!(total, 64 << 20, "and the checksum matched");
    assert!(inflate_bomb_pdf(3).len() < 16 * 1024);
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path());
    let size: u64 = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert!(size < 12 << 20, "{size} bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_read_in_the_sandbox_gives_its_links_up_to_ten_thousand() {
    lore_tests::init();
    let sandbox = Sandbox::locate(&ParsingLimits::default()).expect("the built lore (cargo build -p lore --bins)");
    let page = |n: usize| {
        let links: String = (0..n).map(|i| format!("<a href=\"p{i}.html\">page {i}</a> ")).collect();
        format!("<html><head><base href=\"/docs/\"></head><body><p>{links}</p></body></html>").into_bytes()
    };
    let parsed = blocks_of(&sandbox, Path::new("a.html"), Format::Html, page(3), true).await.unwrap();
    assert_eq!(parsed.links, Some((vec!["p0.html".into(), "p1.html".into(), "p2.html".into()], Some("/docs/".into()))));
    assert!(parsed.blocks[0].text.contains("page 2"), "{:?}", parsed.blocks);
    let many = blocks_of(&sandbox, Path::new("b.html"), Format::Html, page(12_000), true).await.unwrap();
    assert_eq!(many.links.unwrap().0.len(), 10_000);
}

/// Documents to mutate: an honest one of every format, and small hostile ones.
fn seeds() -> Vec<(Format, Vec<u8>)> {
    let html = "<html><body><main><h1>Tides</h1><p>The ferry <b>waits</b>.</p><table><tr><td>a</td></tr></table></main></body></html>";
    vec![
        (Format::Text, HONEST_FACT.as_bytes().to_vec()),
        (Format::Markdown, format!("# Lighthouse\n\n{HONEST_FACT}\n```\n# code\n```\n").into_bytes()),
        (Format::Html, html.as_bytes().to_vec()),
        (Format::Html, nested_elements_html(20_000).into_bytes()),
        (Format::Html, nested_divs_html(2_000).into_bytes()),
        (Format::Pdf, honest_pdf("The ferry waits for high tide.")),
        (Format::Pdf, self_parent_pdf()),
        (Format::Pdf, self_drawing_form_pdf()),
        (Format::Pdf, repeated_contents_pdf(300)),
        (Format::Pdf, inflate_bomb_pdf(1)),
        (Format::Docx, honest_docx("Tides", "The ferry waits for high tide.")),
        (Format::Docx, many_styles_docx(2_000, 50)),
        (Format::Odt, honest_odt("Tides", "The ferry waits for high tide.")),
    ]
}

/// How a seed is changed.
#[derive(Debug, Clone)]
enum Mutation {
    /// None: the seed as it is.
    Keep,
    /// Bits flipped at these fractions of the length.
    Flip(Vec<(f64, u8)>),
    /// Cut at this fraction of the length.
    Truncate(f64),
    /// The start of one document up to a fraction, then another's end from a fraction.
    Splice(usize, f64, f64),
    /// Random bytes, named as the seed's format.
    Random(Vec<u8>),
    /// Random bytes after the seed's own first bytes (its magic number).
    RandomAfterMagic(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        Just(Mutation::Keep),
        prop::collection::vec((0.0..1.0f64, 0..8u8), 1..16).prop_map(Mutation::Flip),
        (0.0..1.0f64).prop_map(Mutation::Truncate),
        (any::<usize>(), 0.0..1.0f64, 0.0..1.0f64).prop_map(|(o, a, b)| Mutation::Splice(o, a, b)),
        prop::collection::vec(any::<u8>(), 0..4096).prop_map(Mutation::Random),
        prop::collection::vec(any::<u8>(), 0..4096).prop_map(Mutation::RandomAfterMagic),
    ]
}

fn mutate(seeds: &[(Format, Vec<u8>)], seed: usize, mutation: &Mutation) -> Vec<u8> {
    let at = |bytes: &[u8], fraction: f64| ((bytes.len() as f64 * fraction) as usize).min(bytes.len());
    let mut bytes = seeds[seed].1.clone();
    match mutation {
        Mutation::Keep => {}
        Mutation::Flip(flips) => {
            for (fraction, bit) in flips {
                let i = at(&bytes, *fraction).min(bytes.len().saturating_sub(1));
                if let Some(b) = bytes.get_mut(i) {
                    *b ^= 1 << bit;
                }
            }
        }
        Mutation::Truncate(fraction) => bytes.truncate(at(&bytes, *fraction)),
        Mutation::Splice(other, a, b) => {
            let other = &seeds[other % seeds.len()].1;
            bytes.truncate(at(&bytes, *a));
            bytes.extend_from_slice(&other[at(other, *b)..]);
        }
        Mutation::Random(random) => bytes = random.clone(),
        Mutation::RandomAfterMagic(random) => {
            bytes.truncate(8);
            bytes.extend_from_slice(random);
        }
    }
    bytes
}

/// What the property test saw, for docs/RELIABILITY.md (printed at its end).
#[derive(Default)]
struct Seen {
    cases: usize,
    by_format: BTreeMap<&'static str, usize>,
    outcomes: BTreeMap<String, usize>,
    slowest: Duration,
    total: Duration,
    most_memory_kib: u64,
}

const CASES_PER_FORMAT: u32 = 100;

#[test]
fn random_and_mutated_documents_of_every_format_end_as_blocks_or_a_named_skip() {
    lore_tests::init();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let limits = ParsingLimits { memory_mib: 128, cpu_secs: 2, timeout_secs: 20 };
    let sandbox = Sandbox::locate(&limits).expect("the built lore (cargo build -p lore --bins)");
    let seeds = seeds();
    // The runner's closure is `Fn`: what it sees is counted through a cell.
    let seen = std::cell::RefCell::new(Seen::default());
    for format in Format::ALL {
        let config = ProptestConfig {
            cases: CASES_PER_FORMAT,
            max_shrink_iters: 64,
            failure_persistence: None,
            ..ProptestConfig::default()
        };
        let own: Vec<usize> = (0..seeds.len()).filter(|&i| seeds[i].0 == format).collect();
        let mut runner = proptest::test_runner::TestRunner::new(config);
        let result = runner.run(&(0..own.len(), mutation()), |(pick, mutation)| {
            let bytes = mutate(&seeds, own[pick], &mutation);
            let path = Path::new("case").with_extension(format.name());
            let started = Instant::now();
            let result = runtime.block_on(blocks_of(&sandbox, &path, format, bytes, format == Format::Html));
            let took = started.elapsed();
            let outcome = match &result {
                Ok(parsed) => {
                    prop_assert!(parsed.blocks.iter().all(|b| !b.text.trim().is_empty()));
                    "read".to_string()
                }
                Err(skipped) => {
                    let named = format!("skipped {}", path.display());
                    prop_assert!(skipped.message.starts_with(&named) && skipped.message.len() > named.len() + 5);
                    let safely = skipped.message.contains("could not be read safely (");
                    prop_assert_eq!(skipped.reason == SkipReason::Unsafe, safely, "{}", &skipped.message);
                    skipped.reason.to_string()
                }
            };
            let mut seen = seen.borrow_mut();
            seen.cases += 1;
            *seen.by_format.entry(format.name()).or_default() += 1;
            *seen.outcomes.entry(outcome).or_default() += 1;
            seen.slowest = seen.slowest.max(took);
            seen.total += took;
            let memory = result.as_ref().ok().and_then(|p| p.peak_memory_kib).unwrap_or(0);
            seen.most_memory_kib = seen.most_memory_kib.max(memory);
            Ok(())
        });
        if let Err(failure) = result {
            panic!("{format}: {failure}");
        }
    }
    let seen = seen.into_inner();
    eprintln!(
        "{} documents ({:?}); outcomes {:?}; the caller crashed 0 times; {:.0} ms a document on average, {:.1} s at most; at most {} MiB resident in a parser that answered",
        seen.cases,
        seen.by_format,
        seen.outcomes,
        seen.total.as_secs_f64() * 1000.0 / seen.cases as f64,
        seen.slowest.as_secs_f64(),
        seen.most_memory_kib / 1024
    );
    assert!(seen.by_format.values().all(|&n| n >= CASES_PER_FORMAT as usize), "{:?}", seen.by_format);
}
