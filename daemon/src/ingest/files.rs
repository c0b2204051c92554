//! Which files an ingest reads, and reading them into blocks of text (`lore-documents`
//! knows the formats; [`super::sandbox`] runs it where a hostile file cannot hurt). What
//! cannot be read is skipped with a warning that names it and says why, so one bad file
//! stops nothing else. Only regular files are opened, and no more of one is read than
//! `max_file_bytes`.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::fs::{File, FileType};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use lore_documents::{Block, Content, Format, Unreadable};

use super::sandbox::{panic_message, Parsed, Sandbox};

/// Why a file (or a folder, or a link) was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    TooLarge,
    Binary,
    NotUtf8,
    NeedsOcr,
    Encrypted,
    Corrupt,
    WrongType,
    ZipBomb,
    LinkOutside,
    Unreadable,
    /// A page that robots.txt asks crawlers to leave alone.
    Disallowed,
    /// A page served under another address too, stored once.
    Duplicate,
    /// A page whose server answered with an error, or did not answer.
    Unreachable,
    /// A FIFO, socket or device where a file was expected: never opened.
    NotAFile,
    /// Its parser crashed, or ran past a limit of the `parsing:` section.
    Unsafe,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::TooLarge => "too large",
            SkipReason::Binary => "binary",
            SkipReason::NotUtf8 => "not UTF-8",
            SkipReason::NeedsOcr => "no text (needs OCR)",
            SkipReason::Encrypted => "encrypted",
            SkipReason::Corrupt => "corrupt",
            SkipReason::WrongType => "wrong type",
            SkipReason::ZipBomb => "zip bomb",
            SkipReason::LinkOutside => "link outside",
            SkipReason::Unreadable => "unreadable",
            SkipReason::Disallowed => "disallowed by robots.txt",
            SkipReason::Duplicate => "duplicate",
            SkipReason::Unreachable => "unreachable",
            SkipReason::NotAFile => "not a regular file",
            SkipReason::Unsafe => "could not be read safely",
        })
    }
}

/// Something left out, with the warning that says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: SkipReason,
    pub message: String,
}

impl Skipped {
    pub(crate) fn new(path: &Path, reason: SkipReason, why: impl fmt::Display) -> Self {
        Self { path: path.to_path_buf(), reason, message: format!("skipped {}: {why}", path.display()) }
    }
}

/// The files to read, sorted, and what the walk left out.
#[derive(Debug, Default)]
pub struct Found {
    pub files: Vec<PathBuf>,
    pub skipped: Vec<Skipped>,
}

/// Every supported file under `roots` (canonical paths). A file named directly must be
/// supported and a root must be readable; below a root, links are followed only to what
/// lies inside one of the roots, and each folder is walked once (so a link loop ends).
pub fn collect_files(roots: &[PathBuf]) -> anyhow::Result<Found> {
    let mut files = BTreeSet::new();
    let mut found = Found::default();
    let mut walked = HashSet::new();
    for root in roots {
        let kind = std::fs::metadata(root).with_context(|| format!("cannot read {}", root.display()))?.file_type();
        if kind.is_dir() {
            std::fs::read_dir(root).with_context(|| format!("cannot read folder {}", root.display()))?;
            let mut walk = Walk { roots, walked: &mut walked, files: &mut files, skipped: &mut found.skipped };
            walk.folder(root);
        } else if !supported(root) {
            bail!(
                "{}: lore cannot ingest this file type yet (supported: {})",
                root.display(),
                lore_documents::EXTENSIONS.map(|(e, _)| format!(".{e}")).join(", ")
            );
        } else if kind.is_file() {
            files.insert(root.clone());
        } else {
            found.skipped.push(not_a_file(root, kind));
        }
    }
    found.files = files.into_iter().collect();
    Ok(found)
}

struct Walk<'a> {
    roots: &'a [PathBuf],
    walked: &'a mut HashSet<PathBuf>,
    files: &'a mut BTreeSet<PathBuf>,
    skipped: &'a mut Vec<Skipped>,
}

impl Walk<'_> {
    /// `dir` is canonical.
    fn folder(&mut self, dir: &Path) {
        if !self.walked.insert(dir.to_path_buf()) {
            return;
        }
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => return self.skip(Skipped::new(dir, SkipReason::Unreadable, format!("cannot read folder: {e}"))),
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    return self.skip(Skipped::new(dir, SkipReason::Unreadable, format!("cannot read folder: {e}")))
                }
            };
            let path = entry.path();
            let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
            if !hidden {
                self.entry(&path, entry.file_type().is_ok_and(|t| t.is_symlink()));
            }
        }
    }

    fn entry(&mut self, path: &Path, is_link: bool) {
        let real = if is_link {
            match self.follow(path) {
                Some(real) => real,
                None => return,
            }
        } else {
            path.to_path_buf()
        };
        // What cannot be looked at is taken as a file: reading it says why it cannot be read.
        let kind = std::fs::metadata(&real).map(|m| m.file_type()).ok();
        if kind.is_some_and(|k| k.is_dir()) {
            self.folder(&real);
        } else if supported(&real) {
            match kind {
                // A FIFO named `notes.md` would hang the read; a device would never end.
                Some(kind) if !kind.is_file() => self.skip(not_a_file(&real, kind)),
                _ => {
                    self.files.insert(real);
                }
            }
        }
    }

    /// Where the link `path` leads, if it is to be followed: inside a root. A link to a
    /// supported file or a folder elsewhere is reported; other links are ignored.
    fn follow(&mut self, path: &Path) -> Option<PathBuf> {
        let relevant = |p: &Path| p.is_dir() || supported(p);
        let real = match std::fs::canonicalize(path) {
            Ok(real) => real,
            Err(e) => {
                if supported(path) {
                    self.skip(Skipped::new(path, SkipReason::Unreadable, format!("broken link: {e}")));
                }
                return None;
            }
        };
        if self.roots.iter().any(|r| real.starts_with(r)) {
            return Some(real);
        }
        if relevant(&real) {
            let why = format!("link to {}, outside the ingested folders; not followed", real.display());
            self.skip(Skipped::new(path, SkipReason::LinkOutside, why));
        }
        None
    }

    fn skip(&mut self, skipped: Skipped) {
        self.skipped.push(skipped);
    }
}

fn supported(path: &Path) -> bool {
    Format::of_path(path).is_some()
}

/// What a FIFO, socket or device named like a document is: skipped, never opened.
fn not_a_file(path: &Path, kind: FileType) -> Skipped {
    use std::os::unix::fs::FileTypeExt;
    let what = if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "something"
    };
    Skipped::new(path, SkipReason::NotAFile, format!("{what}, not a regular file; left unopened"))
}

/// The blocks of text of a supported file of at most `max_bytes`, or why it is skipped:
/// too large, not a regular file, unreadable, binary or not UTF-8 (a text format), what
/// `lore-documents` found wrong with it, or what happened to its parser.
pub async fn read_blocks(path: &Path, max_bytes: u64, sandbox: &Sandbox) -> Result<Vec<Block>, Skipped> {
    let format =
        Format::of_path(path).ok_or_else(|| Skipped::new(path, SkipReason::WrongType, "not a supported type"))?;
    let bytes = {
        let file = path.to_path_buf();
        off_the_workers(path, move || read_bytes(&file, max_bytes)).await?
    };
    Ok(blocks_of(sandbox, path, format, bytes, false).await?.blocks)
}

/// The blocks of a document in `format` (a file, or a page fetched from `path`, its
/// address), or why it is skipped; with `links`, an HTML page's links too. Plain text and
/// Markdown are read here (our own code, linear in the text); every other format in a
/// child process of the `sandbox`.
pub async fn blocks_of(
    sandbox: &Sandbox,
    path: &Path,
    format: Format,
    bytes: Vec<u8>,
    links: bool,
) -> Result<Parsed, Skipped> {
    let bytes = {
        let document = path.to_path_buf();
        off_the_workers(path, move || {
            // A PDF or an archive named as text is told apart by `lore_documents::read`.
            let container = matches!(Content::of(&bytes), Content::Pdf | Content::Zip);
            if format.is_text() && !container {
                text_bytes(&document, bytes)
            } else {
                Ok(bytes)
            }
        })
        .await?
    };
    if !matches!(format, Format::Text | Format::Markdown) {
        return sandbox.parse(path, format, bytes, links).await;
    }
    let document = path.to_path_buf();
    let blocks =
        off_the_workers(path, move || lore_documents::read(format, &bytes).map_err(|why| unreadable(&document, why)))
            .await?;
    Ok(Parsed { blocks, links: None, peak_memory_kib: None })
}

/// Runs `read` on a blocking thread, off the async workers (a re-ingest shares them with
/// the daemon). A panic in it skips that document, in words, and nothing else.
async fn off_the_workers<T: Send + 'static>(
    path: &Path,
    read: impl FnOnce() -> Result<T, Skipped> + Send + 'static,
) -> Result<T, Skipped> {
    tokio::task::spawn_blocking(read).await.unwrap_or_else(|e| {
        let why = match e.try_into_panic() {
            Ok(payload) => format!("the reader panicked: {}", panic_message(payload.as_ref())),
            Err(e) => format!("the reader was stopped: {e}"),
        };
        Err(Skipped::new(path, SkipReason::Unsafe, format!("could not be read safely ({why})")))
    })
}

/// The skip for what `lore-documents` found wrong with a document.
pub(crate) fn unreadable(path: &Path, why: Unreadable) -> Skipped {
    let reason = match why {
        Unreadable::NeedsOcr => SkipReason::NeedsOcr,
        Unreadable::Encrypted => SkipReason::Encrypted,
        Unreadable::Corrupt { .. } => SkipReason::Corrupt,
        Unreadable::WrongType { .. } => SkipReason::WrongType,
        Unreadable::TooLargeInside(_) => SkipReason::ZipBomb,
    };
    Skipped::new(path, reason, why)
}

/// The bytes of the regular file `path`, at most `max_bytes` of them.
fn read_bytes(path: &Path, max_bytes: u64) -> Result<Vec<u8>, Skipped> {
    let (file, size) = open_regular(path)?;
    if size > max_bytes {
        let why = format!("{} is over max_file_bytes ({})", human_bytes(size), human_bytes(max_bytes));
        return Err(Skipped::new(path, SkipReason::TooLarge, why));
    }
    read_at_most(file, path, max_bytes)
}

/// `path` opened for reading if it is a regular file, with its size. Opened without
/// blocking and checked on the open handle: a FIFO put in a file's place after the walk
/// would otherwise wait for a writer forever.
fn open_regular(path: &Path) -> Result<(File, u64), Skipped> {
    use std::os::unix::fs::OpenOptionsExt;
    let unreadable = |e: std::io::Error| Skipped::new(path, SkipReason::Unreadable, format!("cannot read it: {e}"));
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(unreadable)?;
    let metadata = file.metadata().map_err(unreadable)?;
    if !metadata.is_file() {
        return Err(not_a_file(path, metadata.file_type()));
    }
    Ok((file, metadata.len()))
}

/// Reads `file` to its end, but no further than `max_bytes` + 1: a file that grows while
/// it is read is still bounded (and skipped as too large).
fn read_at_most(file: File, path: &Path, max_bytes: u64) -> Result<Vec<u8>, Skipped> {
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Skipped::new(path, SkipReason::Unreadable, format!("cannot read it: {e}")))?;
    if bytes.len() as u64 > max_bytes {
        let why = format!("it grew past max_file_bytes ({}) while it was read", human_bytes(max_bytes));
        return Err(Skipped::new(path, SkipReason::TooLarge, why));
    }
    Ok(bytes)
}

/// `bytes` if they are UTF-8 text, else why not: binary (a NUL byte near the start) or
/// not UTF-8 (with the line and byte).
fn text_bytes(path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>, Skipped> {
    if Content::of(&bytes) == Content::Binary {
        return Err(Skipped::new(path, SkipReason::Binary, "a binary file (NUL bytes), not text"));
    }
    String::from_utf8(bytes).map(String::into_bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        let why = format!("not valid UTF-8 at line {line}, byte {at}; save it as UTF-8 and ingest again");
        Skipped {
            message: format!("skipped {}:{line}: {why}", path.display()),
            ..Skipped::new(path, SkipReason::NotUtf8, "")
        }
    })
}

/// `1536` -> "1.5 KiB"; exact bytes below 1 KiB.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// Reads a text or Markdown file, which never reaches the sandbox.
    async fn read(path: &Path, max_bytes: u64) -> Result<Vec<Block>, Skipped> {
        let sandbox = Sandbox::new("/nonexistent/lore".into(), &crate::config::ParsingLimits::default());
        read_blocks(path, max_bytes, &sandbox).await
    }

    #[tokio::test]
    async fn a_file_over_the_limit_is_skipped_naming_file_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.md");
        write(&big, &vec![b'a'; 3000]);
        let skipped = read(&big, 2048).await.unwrap_err();
        assert_eq!(skipped.reason, SkipReason::TooLarge);
        assert!(skipped.message.contains("big.md") && skipped.message.contains("2.9 KiB"), "{}", skipped.message);
        assert!(skipped.message.contains("max_file_bytes (2.0 KiB)"), "{}", skipped.message);
        assert_eq!(read(&big, 3000).await.unwrap()[0].text.len(), 3000);
    }

    #[test]
    fn a_file_that_grows_while_it_is_read_is_read_no_further_than_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.txt");
        write(&log, &vec![b'a'; 1000]);
        let (file, size) = open_regular(&log).unwrap();
        assert_eq!(size, 1000, "under the limit when looked at");
        // It grows between the look and the read.
        std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(&vec![b'b'; 1 << 20]).unwrap();
        let skipped = read_at_most(file, &log, 2048).unwrap_err();
        assert_eq!(skipped.reason, SkipReason::TooLarge);
        assert!(skipped.message.contains("grew past max_file_bytes (2.0 KiB)"), "{}", skipped.message);
    }

    #[tokio::test]
    async fn a_fifo_named_like_a_document_is_skipped_without_being_opened() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        write(&root.join("real.md"), b"text");
        let fifo = root.join("notes.md");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo (coreutils)");
        assert!(made.success());
        let found = collect_files(std::slice::from_ref(&root)).unwrap();
        assert_eq!(found.files, vec![root.join("real.md")]);
        assert_eq!(found.skipped.len(), 1, "{:?}", found.skipped);
        assert_eq!(found.skipped[0].reason, SkipReason::NotAFile);
        let message = &found.skipped[0].message;
        assert!(message.contains("notes.md: a FIFO (named pipe), not a regular file"), "{message}");
        // Named directly, or put in a file's place after the walk: read, it is refused at
        // once instead of waiting for a writer.
        let named = collect_files(std::slice::from_ref(&fifo)).unwrap();
        assert_eq!(named.skipped[0].reason, SkipReason::NotAFile);
        let read = tokio::time::timeout(std::time::Duration::from_secs(20), read(&fifo, u64::MAX));
        assert_eq!(read.await.expect("no hang").unwrap_err().reason, SkipReason::NotAFile);
    }

    #[tokio::test]
    async fn a_reader_that_panics_skips_its_document_only() {
        let skipped = off_the_workers(Path::new("odd.md"), || -> Result<(), Skipped> { panic!("index out of bounds") })
            .await
            .unwrap_err();
        assert_eq!(skipped.reason, SkipReason::Unsafe);
        assert_eq!(
            skipped.message,
            "skipped odd.md: could not be read safely (the reader panicked: index out of bounds)"
        );
    }

    #[tokio::test]
    async fn binary_and_non_utf8_files_are_skipped_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let nul = dir.path().join("image.txt");
        write(&nul, b"PNG\0\0\x01binary");
        let skipped = read(&nul, u64::MAX).await.unwrap_err();
        assert_eq!(skipped.reason, SkipReason::Binary);
        assert!(skipped.message.contains("image.txt"), "{}", skipped.message);

        let latin1 = dir.path().join("old.txt");
        write(&latin1, b"line one\nline two \xff\xfe broken\n");
        let skipped = read(&latin1, u64::MAX).await.unwrap_err();
        assert_eq!(skipped.reason, SkipReason::NotUtf8);
        assert!(skipped.message.contains("old.txt:2: not valid UTF-8 at line 2, byte 18"), "{}", skipped.message);
    }

    #[test]
    fn hidden_and_unsupported_files_are_left_out_and_the_rest_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for name in ["b.md", "a/c.txt", "a/d.MARKDOWN", ".git/x.md", "e.jpg"] {
            write(&root.join(name), b"text");
        }
        let found = collect_files(std::slice::from_ref(&root)).unwrap();
        let names: Vec<_> = found.files.iter().map(|f| f.strip_prefix(&root).unwrap().to_path_buf()).collect();
        assert_eq!(names, ["a/c.txt", "a/d.MARKDOWN", "b.md"].map(PathBuf::from));
        assert!(found.skipped.is_empty());
    }

    #[test]
    fn a_link_loop_is_walked_once_and_inner_links_resolve_to_their_target() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        write(&root.join("sub/notes.md"), b"text");
        std::os::unix::fs::symlink(&root, root.join("sub/up")).unwrap();
        std::os::unix::fs::symlink(root.join("sub/notes.md"), root.join("alias.md")).unwrap();
        let found = collect_files(std::slice::from_ref(&root)).unwrap();
        assert_eq!(found.files, vec![root.join("sub/notes.md")]);
        assert!(found.skipped.is_empty(), "{:?}", found.skipped);
    }

    #[test]
    fn links_leading_outside_the_folder_are_not_followed_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let (root, outside) = (base.join("kb"), base.join("private"));
        write(&root.join("mine.md"), b"text");
        write(&outside.join("secret.md"), b"text");
        std::os::unix::fs::symlink(&outside, root.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret.md"), root.join("secret.md")).unwrap();
        std::os::unix::fs::symlink(base.join("gone.md"), root.join("broken.md")).unwrap();
        let found = collect_files(std::slice::from_ref(&root)).unwrap();
        assert_eq!(found.files, vec![root.join("mine.md")]);
        let mut skipped: Vec<_> = found.skipped.iter().map(|s| (s.path.clone(), s.reason)).collect();
        skipped.sort();
        assert_eq!(
            skipped,
            vec![
                (root.join("broken.md"), SkipReason::Unreadable),
                (root.join("elsewhere"), SkipReason::LinkOutside),
                (root.join("secret.md"), SkipReason::LinkOutside),
            ]
        );
        let message = &found.skipped.iter().find(|s| s.path.ends_with("elsewhere")).unwrap().message;
        assert!(message.contains("outside the ingested folders"), "{message}");
    }
}
