//! Which files an ingest reads, and reading them into blocks of text (`lore-documents`
//! knows the formats). What cannot be read is skipped with a warning that names it and
//! says why, so one bad file stops nothing else.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use lore_documents::{Block, Content, Format, Unreadable};

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
        if root.is_file() {
            if !supported(root) {
                bail!(
                    "{}: lore cannot ingest this file type yet (supported: {})",
                    root.display(),
                    lore_documents::EXTENSIONS.map(|(e, _)| format!(".{e}")).join(", ")
                );
            }
            files.insert(root.clone());
        } else {
            std::fs::read_dir(root).with_context(|| format!("cannot read folder {}", root.display()))?;
            let mut walk = Walk { roots, walked: &mut walked, files: &mut files, skipped: &mut found.skipped };
            walk.folder(root);
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
        if real.is_dir() {
            self.folder(&real);
        } else if supported(&real) {
            self.files.insert(real);
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

/// The blocks of text of a supported file of at most `max_bytes`, or why it is skipped:
/// too large, unreadable, binary or not UTF-8 (a text format), or what `lore-documents`
/// found wrong with it.
pub fn read_blocks(path: &Path, max_bytes: u64) -> Result<Vec<Block>, Skipped> {
    let format =
        Format::of_path(path).ok_or_else(|| Skipped::new(path, SkipReason::WrongType, "not a supported type"))?;
    let bytes = read_bytes(path, max_bytes)?;
    blocks_of(path, format, bytes)
}

/// The blocks of a document in `format` (a file, or a page fetched from `path`, its
/// address), or why it is skipped.
pub fn blocks_of(path: &Path, format: Format, bytes: Vec<u8>) -> Result<Vec<Block>, Skipped> {
    // A PDF or an archive named as text is told apart by `lore_documents::read`.
    let container = matches!(Content::of(&bytes), Content::Pdf | Content::Zip);
    let bytes = if format.is_text() && !container { text_bytes(path, bytes)? } else { bytes };
    lore_documents::read(format, &bytes).map_err(|why| {
        let reason = match why {
            Unreadable::NeedsOcr => SkipReason::NeedsOcr,
            Unreadable::Encrypted => SkipReason::Encrypted,
            Unreadable::Corrupt { .. } => SkipReason::Corrupt,
            Unreadable::WrongType { .. } => SkipReason::WrongType,
            Unreadable::TooLargeInside(_) => SkipReason::ZipBomb,
        };
        Skipped::new(path, reason, why)
    })
}

fn read_bytes(path: &Path, max_bytes: u64) -> Result<Vec<u8>, Skipped> {
    let unreadable = |e: std::io::Error| Skipped::new(path, SkipReason::Unreadable, format!("cannot read it: {e}"));
    let size = std::fs::metadata(path).map_err(unreadable)?.len();
    if size > max_bytes {
        let why = format!("{} is over max_file_bytes ({})", human_bytes(size), human_bytes(max_bytes));
        return Err(Skipped::new(path, SkipReason::TooLarge, why));
    }
    std::fs::read(path).map_err(unreadable)
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
    use super::*;

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn a_file_over_the_limit_is_skipped_naming_file_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.md");
        write(&big, &vec![b'a'; 3000]);
        let skipped = read_blocks(&big, 2048).unwrap_err();
        assert_eq!(skipped.reason, SkipReason::TooLarge);
        assert!(skipped.message.contains("big.md") && skipped.message.contains("2.9 KiB"), "{}", skipped.message);
        assert!(skipped.message.contains("max_file_bytes (2.0 KiB)"), "{}", skipped.message);
        assert_eq!(read_blocks(&big, 3000).unwrap()[0].text.len(), 3000);
    }

    #[test]
    fn binary_and_non_utf8_files_are_skipped_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let nul = dir.path().join("image.txt");
        write(&nul, b"PNG\0\0\x01binary");
        let skipped = read_blocks(&nul, u64::MAX).unwrap_err();
        assert_eq!(skipped.reason, SkipReason::Binary);
        assert!(skipped.message.contains("image.txt"), "{}", skipped.message);

        let latin1 = dir.path().join("old.txt");
        write(&latin1, b"line one\nline two \xff\xfe broken\n");
        let skipped = read_blocks(&latin1, u64::MAX).unwrap_err();
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
