//! Where documents are parsed: in a child process, so that a hostile file cannot take the
//! daemon down. A PDF whose page is its own parent or whose form draws itself recurses
//! until the stack overflows, which aborts a process (`catch_unwind` cannot catch it); a
//! stream that inflates to gigabytes exhausts memory; a page nested a million deep keeps
//! an HTML parser busy for hours. In a child each of these ends only the child: the
//! document is skipped ("could not be read safely (…)") and the ingest goes on.
//!
//! The child is this same program run as `lore parse-document --format F`: it limits its
//! own address space and CPU time (`setrlimit`, before it reads anything), reads the
//! document from stdin and writes one JSON [`Answer`] to stdout. The parent bounds what it
//! reads back and kills a child that runs past [`ParsingLimits::timeout_secs`]. One process per
//! document: nothing of one document's parse can reach the next, and the cost (15–25
//! milliseconds per file, docs/BENCHMARKS.md) is small beside embedding the file's chunks.

use std::any::Any;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lore_documents::{Block, Format, Unreadable};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::files::{unreadable, SkipReason, Skipped};
use crate::config::ParsingLimits;

/// The environment variable that names the `lore` executable documents are parsed with,
/// for programs other than `lore` that ingest (tests, library users).
pub const PARSER_ENV: &str = "LORE_BIN";

/// The hidden subcommand a child runs.
pub const SUBCOMMAND: &str = "parse-document";

/// The end of a child's stderr kept to explain how it ended.
const STDERR_TAIL: usize = 16 * 1024;

/// Links read from one HTML page at most: more than any real page has, and few enough that
/// resolving them in the daemon stays quick.
const MAX_LINKS: usize = 10_000;

impl ParsingLimits {
    /// The most a child may answer: its text cannot honestly be larger than its memory.
    fn answer_bytes(&self) -> usize {
        usize::try_from(self.memory_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
    }
}

/// What a sandboxed parse gives.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub blocks: Vec<Block>,
    /// An HTML page's links as written and its `<base href>`, when asked for.
    pub links: Option<(Vec<String>, Option<String>)>,
    /// The child's peak resident memory (Linux), for the benchmark and the logs.
    pub peak_memory_kib: Option<u64>,
}

/// What a child writes to stdout: one JSON document.
#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    outcome: Result<Vec<Block>, Unreadable>,
    #[serde(default)]
    links: Option<(Vec<String>, Option<String>)>,
    #[serde(default)]
    peak_memory_kib: Option<u64>,
}

static THIS_PROGRAM_PARSES: AtomicBool = AtomicBool::new(false);

/// Called by the `lore` program's `main`: its own executable serves `parse-document`.
pub fn this_program_parses() {
    THIS_PROGRAM_PARSES.store(true, Ordering::Relaxed);
}

/// Parses documents in child processes under [`ParsingLimits`].
#[derive(Debug, Clone)]
pub struct Sandbox {
    program: PathBuf,
    /// Arguments before the subcommand (a shell's `-c SCRIPT` in tests).
    prefix: Vec<String>,
    limits: ParsingLimits,
}

impl Sandbox {
    /// The sandbox of this program: `lore` parses with its own executable, another program
    /// with the one [`PARSER_ENV`] names. Not finding it is an error now, not a skip per
    /// document later.
    pub fn locate(limits: &ParsingLimits) -> anyhow::Result<Self> {
        Ok(Self::new(parser_program()?, limits))
    }

    /// Parses with `program`, which must understand `parse-document`.
    pub fn new(program: PathBuf, limits: &ParsingLimits) -> Self {
        Self { program, prefix: Vec::new(), limits: limits.clone() }
    }

    pub fn limits(&self) -> &ParsingLimits {
        &self.limits
    }

    /// Parses `bytes` as `format` in a child process; `path` (a file, or a page's address)
    /// names the document in messages. With `links`, an HTML page's links come back too.
    pub async fn parse(&self, path: &Path, format: Format, bytes: Vec<u8>, links: bool) -> Result<Parsed, Skipped> {
        let started = Instant::now();
        let not_safely =
            |why: String| Skipped::new(path, SkipReason::Unsafe, format!("could not be read safely ({why})"));
        let mut child = self
            .command(format, links)
            .spawn()
            .map_err(|e| not_safely(format!("the parser {} could not be started: {e}", self.program.display())))?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            unreachable!("all three are piped");
        };
        let most = self.limits.answer_bytes();
        let talk = async {
            // A child that stops reading (it crashed, or was done) closes the pipe: its exit
            // status says why, not the failed write.
            let write = async move {
                let _ = stdin.write_all(&bytes).await;
            };
            let read = async {
                let answer = read_at_most(stdout, most).await;
                if answer.is_none() {
                    // Says too much: stopped at once, not when it is done talking.
                    let _ = child.start_kill();
                }
                answer
            };
            let (_, answer, stderr) = tokio::join!(write, read, read_tail(stderr, STDERR_TAIL));
            (answer, stderr, child.wait().await)
        };
        let (answer, stderr, status) = match tokio::time::timeout(self.timeout(), talk).await {
            Ok(ended) => ended,
            Err(_) => {
                let _ = child.kill().await;
                return Err(not_safely(format!("it took over {} s; parsing.timeout_secs", self.limits.timeout_secs)));
            }
        };
        let Some(answer) = answer else {
            return Err(not_safely(format!(
                "its text came to over {} MiB; parsing.memory_mib",
                self.limits.memory_mib
            )));
        };
        let status = status.map_err(|e| not_safely(format!("the parser could not be waited for: {e}")))?;
        if !status.success() {
            return Err(not_safely(explain(status, &String::from_utf8_lossy(&stderr), &self.limits)));
        }
        // As large as the document's text: decoded off the async workers.
        let decoded = tokio::task::spawn_blocking(move || serde_json::from_slice::<Answer>(&answer)).await;
        let answer = decoded
            .map_err(|e| not_safely(format!("the parser's answer could not be read: {e}")))?
            .map_err(|e| not_safely(format!("the parser's answer could not be read: {e}")))?;
        tracing::debug!(
            path = %path.display(),
            format = format.name(),
            ms = started.elapsed().as_millis() as u64,
            peak_memory_kib = answer.peak_memory_kib,
            "parsed in a child process"
        );
        match answer.outcome {
            Ok(blocks) => Ok(Parsed { blocks, links: answer.links, peak_memory_kib: answer.peak_memory_kib }),
            Err(why) => Err(unreadable(path, why)),
        }
    }

    fn command(&self, format: Format, links: bool) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.prefix)
            .arg(SUBCOMMAND)
            .args(["--format", format.name()])
            .args(["--memory-mib", &self.limits.memory_mib.to_string()])
            .args(["--cpu-secs", &self.limits.cpu_secs.to_string()])
            // A panic's message is all the parent reads; a backtrace only slows the child.
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if links {
            command.arg("--links");
        }
        command
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.limits.timeout_secs)
    }
}

/// The executable that parses documents; see [`Sandbox::locate`].
fn parser_program() -> anyhow::Result<PathBuf> {
    if THIS_PROGRAM_PARSES.load(Ordering::Relaxed) {
        // On Linux this is the running program even after its file was replaced by an
        // upgrade, so parent and child always speak the same protocol.
        let running = Path::new("/proc/self/exe");
        if running.exists() {
            return Ok(running.to_path_buf());
        }
        return std::env::current_exe().context("cannot find this program's executable to parse documents with");
    }
    let this = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "this program".into());
    match std::env::var_os(PARSER_ENV) {
        Some(path) if Path::new(&path).is_file() => Ok(PathBuf::from(path)),
        Some(path) => bail!("{PARSER_ENV}={} is not a file: it must name the `lore` executable", Path::new(&path).display()),
        None => bail!(
            "documents are parsed by the `lore` executable in a separate process, and {this} is not `lore`: set {PARSER_ENV} to the path of a `lore` executable"
        ),
    }
}

/// `Some(bytes)`, or `None` when the pipe holds more than `most` (then it is closed, so a
/// child still writing fails instead of blocking).
async fn read_at_most(pipe: impl AsyncRead + Unpin, most: usize) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    let read = pipe.take(most as u64 + 1).read_to_end(&mut bytes).await;
    (read.is_ok() && bytes.len() <= most).then_some(bytes)
}

/// The last `keep` bytes of what comes through the pipe until it closes, so that a child
/// writing much to stderr neither blocks nor grows the parent.
async fn read_tail(mut pipe: impl AsyncRead + Unpin, keep: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buffer = vec![0; 8192];
    while let Ok(n @ 1..) = pipe.read(&mut buffer).await {
        kept.extend_from_slice(&buffer[..n]);
        if kept.len() > 2 * keep {
            kept.drain(..kept.len() - keep);
        }
    }
    kept
}

/// How a child that did not answer ended, in words: the limit it ran into, or its crash.
fn explain(status: ExitStatus, stderr: &str, limits: &ParsingLimits) -> String {
    let out_of_memory = stderr.contains("memory allocation of");
    match status.signal() {
        Some(libc::SIGXCPU) => format!("it used more than {} s of CPU; parsing.cpu_secs", limits.cpu_secs),
        _ if out_of_memory => format!("it used more than {} MiB of memory; parsing.memory_mib", limits.memory_mib),
        Some(_) if stderr.contains("overflowed its stack") => "the parser crashed: stack overflow".into(),
        Some(libc::SIGKILL) => {
            "the parser was killed (SIGKILL: over its CPU limit, or the system ran out of memory)".into()
        }
        Some(signal) => format!("the parser crashed: signal {signal} ({})", signal_name(signal)),
        None => {
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
            match status.code() {
                Some(code) => format!("the parser failed with exit status {code}: {last}"),
                None => format!("the parser failed: {last}"),
            }
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGABRT => "SIGABRT, aborted",
        libc::SIGSEGV => "SIGSEGV, invalid memory access",
        libc::SIGBUS => "SIGBUS, bus error",
        libc::SIGILL => "SIGILL, illegal instruction",
        libc::SIGFPE => "SIGFPE, arithmetic error",
        libc::SIGTERM => "SIGTERM, asked to stop",
        libc::SIGPIPE => "SIGPIPE, broken pipe",
        _ => "a signal",
    }
}

/// The words of a panic's payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// `lore parse-document`: parses one document, read from stdin, into one JSON answer on
/// stdout, under the limits given. The daemon runs it; people need not.
#[derive(Debug, Clone, clap::Args)]
pub struct ParseArgs {
    /// text, markdown, pdf, html, docx or odt.
    #[arg(long)]
    pub format: Format,
    /// Memory the parse may take beyond this program's own, in MiB.
    #[arg(long)]
    pub memory_mib: u64,
    /// CPU seconds the parse may use.
    #[arg(long)]
    pub cpu_secs: u64,
    /// Also an HTML page's links.
    #[arg(long)]
    pub links: bool,
}

/// The child's whole life: limits first, then read, parse, answer. Exits 0 with an answer
/// whatever the document holds; a crash or a limit ends the process, which the parent
/// reports.
pub fn parse_document(args: &ParseArgs) -> anyhow::Result<()> {
    limit_this_process(args.memory_mib, args.cpu_secs)?;
    let mut bytes = Vec::new();
    std::io::stdin().lock().read_to_end(&mut bytes).context("reading the document from stdin")?;
    let format = args.format;
    let gave_up = |payload: Box<dyn Any + Send>| Unreadable::Corrupt {
        format,
        why: format!("the {format} reader gave up on it ({})", panic_message(payload.as_ref())),
    };
    let outcome = std::panic::catch_unwind(|| lore_documents::read(format, &bytes)).unwrap_or_else(|p| Err(gave_up(p)));
    let links = (args.links && format == Format::Html && outcome.is_ok())
        .then(|| {
            let html = std::str::from_utf8(&bytes).ok()?;
            let (mut links, base) = std::panic::catch_unwind(|| lore_documents::links(html)).ok()?;
            links.truncate(MAX_LINKS);
            Some((links, base))
        })
        .flatten();
    drop(bytes);
    let answer = Answer { outcome, links, peak_memory_kib: status_kib("VmHWM") };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer(&mut out, &answer).context("writing the answer")?;
    out.flush().context("writing the answer")
}

/// Lowers this process's limits: address space to its size now plus `memory_mib`, CPU
/// time to `cpu_secs` (SIGXCPU, then SIGKILL a second later), and no core files (a crash
/// at the memory limit would write one that large).
fn limit_this_process(memory_mib: u64, cpu_secs: u64) -> anyhow::Result<()> {
    use rlimit::Resource;
    let lower = |resource: Resource, soft: u64, hard: u64| -> anyhow::Result<()> {
        let (_, max) = rlimit::getrlimit(resource)?;
        rlimit::setrlimit(resource, soft.min(max), hard.min(max))
            .with_context(|| format!("cannot limit {}", resource.as_name()))
    };
    lower(Resource::CORE, 0, 0)?;
    let own = status_kib("VmSize").unwrap_or(0).saturating_mul(1024);
    let address_space = own.saturating_add(memory_mib.saturating_mul(1 << 20));
    lower(Resource::AS, address_space, address_space)?;
    lower(Resource::CPU, cpu_secs, cpu_secs.saturating_add(1))
}

/// A `kB` figure of this process from `/proc/self/status` (Linux): `VmSize` is its address
/// space, `VmHWM` its peak resident memory.
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.strip_prefix(field).is_some_and(|rest| rest.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sandbox whose "parser" is a shell script: `$@` holds the subcommand and limits.
    fn shell(script: &str, limits: ParsingLimits) -> Sandbox {
        Sandbox { program: "/bin/sh".into(), prefix: vec!["-c".into(), script.into(), "sh".into()], limits }
    }

    async fn why_skipped(script: &str, limits: ParsingLimits) -> String {
        let skipped = shell(script, limits)
            .parse(Path::new("doc.pdf"), Format::Pdf, b"%PDF-1.7".repeat(100_000), false)
            .await
            .unwrap_err();
        assert_eq!(skipped.reason, SkipReason::Unsafe, "{}", skipped.message);
        let message = skipped.message;
        let prefix = "skipped doc.pdf: could not be read safely (";
        assert!(message.starts_with(prefix) && message.ends_with(')'), "{message}");
        message[prefix.len()..message.len() - 1].to_string()
    }

    #[tokio::test]
    async fn every_way_a_parser_can_end_is_a_skip_in_words() {
        let limits = ParsingLimits { memory_mib: 64, cpu_secs: 5, timeout_secs: 30 };
        let cases = [
            ("kill -SEGV $$", "the parser crashed: signal 11 (SIGSEGV, invalid memory access)"),
            (
                "echo \"thread 'main' has overflowed its stack\" >&2; echo 'fatal runtime error: stack overflow' >&2; kill -ABRT $$",
                "the parser crashed: stack overflow",
            ),
            ("echo 'memory allocation of 4294967296 bytes failed' >&2; kill -ABRT $$", "it used more than 64 MiB of memory; parsing.memory_mib"),
            ("kill -XCPU $$", "it used more than 5 s of CPU; parsing.cpu_secs"),
            ("kill -KILL $$", "the parser was killed (SIGKILL: over its CPU limit, or the system ran out of memory)"),
            ("echo 'Error: cannot limit RLIMIT_AS' >&2; exit 1", "the parser failed with exit status 1: Error: cannot limit RLIMIT_AS"),
            ("cat >/dev/null; echo 'not json'", "the parser's answer could not be read: expected ident at line 1 column 2"),
            // Exits without reading its input: the parent's write fails, the status speaks.
            ("exit 3", "the parser failed with exit status 3: no message"),
        ];
        for (script, expected) in cases {
            assert_eq!(why_skipped(script, limits.clone()).await, expected, "{script}");
        }
    }

    #[tokio::test]
    async fn a_parser_past_its_time_is_killed_and_one_that_says_too_much_is_cut_off() {
        let quick = ParsingLimits { memory_mib: 16, cpu_secs: 5, timeout_secs: 1 };
        let started = Instant::now();
        assert_eq!(why_skipped("sleep 30", quick.clone()).await, "it took over 1 s; parsing.timeout_secs");
        assert!(started.elapsed() < Duration::from_secs(25), "killed, not waited for");
        let endless = "cat >/dev/null; exec cat /dev/zero";
        let patient = ParsingLimits { timeout_secs: 60, ..quick };
        assert_eq!(why_skipped(endless, patient).await, "its text came to over 16 MiB; parsing.memory_mib");
    }

    #[tokio::test]
    async fn an_answer_gives_blocks_links_or_the_documents_own_reason() {
        let limits = ParsingLimits::default();
        let answer = r#"cat >/dev/null; echo '{"outcome":{"Ok":[{"text":"Hello.","page":2,"section":[],"first_line":null}]},"links":[["a.html"],null],"peak_memory_kib":1234}'"#;
        let parsed =
            shell(answer, limits.clone()).parse(Path::new("p.html"), Format::Html, b"x".to_vec(), true).await.unwrap();
        assert_eq!(parsed.blocks, [Block { text: "Hello.".into(), page: Some(2), ..Block::default() }]);
        assert_eq!(parsed.links, Some((vec!["a.html".to_string()], None)));
        assert_eq!(parsed.peak_memory_kib, Some(1234));
        let encrypted = r#"cat >/dev/null; echo '{"outcome":{"Err":"Encrypted"}}'"#;
        let skipped =
            shell(encrypted, limits).parse(Path::new("s.pdf"), Format::Pdf, b"x".to_vec(), false).await.unwrap_err();
        assert_eq!(skipped.reason, SkipReason::Encrypted);
        assert!(skipped.message.starts_with("skipped s.pdf: encrypted"), "{}", skipped.message);
    }

    #[test]
    fn this_process_knows_its_own_size() {
        assert!(status_kib("VmSize").is_some_and(|kib| kib > 1000));
        assert!(status_kib("VmHWM").is_some_and(|kib| kib > 100));
        assert_eq!(status_kib("NoSuchField"), None);
    }
}
