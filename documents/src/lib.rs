//! The files people keep their knowledge in, as text blocks that know where they stand: a
//! page (PDF), a heading path (Markdown, HTML, DOCX, ODT) and, for plain text and
//! Markdown, their first line. Ingest chunks each block and cites a chunk by its place.
//!
//! This crate knows file formats; nothing of models, LanceDB, chat platforms or the
//! network (it reads links and sitemaps for the daemon's crawler, which fetches).

mod html;
mod markdown;
mod office;
mod pdf;
mod web;

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use web::{links, sitemap, Sitemap};

/// A file format Lore reads. Its serialised form is [`Format::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Text,
    Markdown,
    Pdf,
    Html,
    Docx,
    Odt,
}

/// File name extensions and the format each names.
pub const EXTENSIONS: [(&str, Format); 9] = [
    ("txt", Format::Text),
    ("md", Format::Markdown),
    ("markdown", Format::Markdown),
    ("pdf", Format::Pdf),
    ("html", Format::Html),
    ("htm", Format::Html),
    ("xhtml", Format::Html),
    ("docx", Format::Docx),
    ("odt", Format::Odt),
];

impl Format {
    /// The format a file's extension names, if Lore reads it.
    pub fn of_path(path: &Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        EXTENSIONS.iter().find(|(e, _)| *e == extension).map(|(_, f)| *f)
    }

    /// Whether its content is text (read as UTF-8), not a binary container.
    pub fn is_text(self) -> bool {
        matches!(self, Format::Text | Format::Markdown | Format::Html)
    }

    pub const ALL: [Format; 6] = [Format::Text, Format::Markdown, Format::Pdf, Format::Html, Format::Docx, Format::Odt];

    /// Its name for programs (a command-line argument, JSON): `text`, `markdown`, `pdf`,
    /// `html`, `docx`, `odt`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Markdown => "markdown",
            Format::Pdf => "pdf",
            Format::Html => "html",
            Format::Docx => "docx",
            Format::Odt => "odt",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    /// A format by its [`Format::name`].
    fn from_str(name: &str) -> Result<Self, String> {
        Format::ALL.into_iter().find(|f| f.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
            format!("{name:?} is not a format (one of {})", names.join(", "))
        })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Text => "plain text",
            Format::Markdown => "Markdown",
            Format::Pdf => "PDF",
            Format::Html => "HTML",
            Format::Docx => "DOCX",
            Format::Odt => "ODT",
        })
    }
}

/// A run of text under one heading path, on one page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub text: String,
    /// 1-based page (PDF).
    pub page: Option<u32>,
    /// Headings from the outermost down to the one this text is under.
    pub section: Vec<String>,
    /// 1-based line of the file where the text starts (plain text and Markdown).
    pub first_line: Option<u32>,
}

/// Why a document gives no text. Each says what a person can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Unreadable {
    #[error("no text: needs OCR (a scanned PDF has pictures of pages, no text layer)")]
    NeedsOcr,
    #[error("encrypted: save a copy without a password and ingest that")]
    Encrypted,
    #[error("not a readable {format}: {why}")]
    Corrupt { format: Format, why: String },
    #[error("named as {named} but looks like {}: rename it or convert it", looks_like.described())]
    WrongType { named: Format, looks_like: Content },
    #[error("{0}: refused as a possible zip bomb")]
    TooLargeInside(String),
}

/// Extracts the blocks of a document in `format` from its bytes. Text formats must be
/// UTF-8 already (the caller reports files that are not).
pub fn read(format: Format, bytes: &[u8]) -> Result<Vec<Block>, Unreadable> {
    let content = Content::of(bytes);
    let expected = match format {
        Format::Pdf => Content::Pdf,
        Format::Docx | Format::Odt => Content::Zip,
        Format::Text | Format::Markdown | Format::Html => Content::Text,
    };
    if content != expected {
        return Err(Unreadable::WrongType { named: format, looks_like: content });
    }
    let text = || std::str::from_utf8(bytes).map_err(|e| Unreadable::Corrupt { format, why: e.to_string() });
    let blocks = match format {
        Format::Text => vec![Block { text: text()?.to_string(), first_line: Some(1), ..Block::default() }],
        Format::Markdown => markdown::blocks(text()?),
        Format::Html => html::blocks(text()?),
        Format::Pdf => pdf::blocks(bytes)?,
        Format::Docx => office::docx_blocks(bytes)?,
        Format::Odt => office::odt_blocks(bytes)?,
    };
    Ok(join_bare_headings(blocks.into_iter().filter(|b| !b.text.trim().is_empty()).collect()))
}

/// A heading with no text of its own before a subheading ("# Leave" then "## Sick days")
/// goes to the front of the subheading's block, so no chunk holds a heading alone.
fn join_bare_headings(blocks: Vec<Block>) -> Vec<Block> {
    let mut out: Vec<Block> = Vec::with_capacity(blocks.len());
    for mut block in blocks {
        if let Some(last) = out.last() {
            let bare = !last.section.is_empty() && last.text.trim().lines().count() == 1;
            if bare && block.section.starts_with(&last.section) && block.page == last.page {
                let last = out.pop().expect("just seen");
                block.text = format!("{}{}", last.text, block.text);
                block.first_line = last.first_line.or(block.first_line);
            }
        }
        out.push(block);
    }
    out
}

/// What a file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Content {
    Pdf,
    /// A zip archive (DOCX, ODT, or any other).
    Zip,
    /// A NUL byte near the start, as git and grep tell binary files.
    Binary,
    Text,
}

impl Content {
    pub fn of(bytes: &[u8]) -> Self {
        if bytes.starts_with(b"%PDF-") {
            Content::Pdf
        } else if bytes.starts_with(b"PK\x03\x04") {
            Content::Zip
        } else if bytes[..bytes.len().min(8192)].contains(&0) {
            Content::Binary
        } else {
            Content::Text
        }
    }

    fn described(self) -> &'static str {
        match self {
            Content::Pdf => "a PDF",
            Content::Zip => "a zip archive",
            Content::Binary => "a binary file",
            Content::Text => "text",
        }
    }
}

/// Joins a heading path for citing: `Leave › Sick days`.
pub fn section_path(section: &[String]) -> String {
    section.join(" › ")
}

/// Collapses runs of whitespace inside a line of extracted text.
fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_whose_content_is_not_what_its_name_says_is_refused_in_words() {
        let err = read(Format::Pdf, b"Just some notes.\n").unwrap_err();
        assert_eq!(err, Unreadable::WrongType { named: Format::Pdf, looks_like: Content::Text });
        assert_eq!(err.to_string(), "named as PDF but looks like text: rename it or convert it");
        let err = read(Format::Markdown, b"%PDF-1.7\n...").unwrap_err();
        assert_eq!(err, Unreadable::WrongType { named: Format::Markdown, looks_like: Content::Pdf });
        assert_eq!(err.to_string(), "named as Markdown but looks like a PDF: rename it or convert it");
        assert!(matches!(read(Format::Docx, b"<html></html>"), Err(Unreadable::WrongType { .. })));
    }

    #[test]
    fn a_heading_with_no_text_of_its_own_joins_its_first_subheading() {
        let blocks = read(Format::Markdown, b"# Leave\n## Sick days\nCall in.\n## Holidays\nBook.\n").unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].text, "# Leave\n## Sick days\nCall in.\n");
        assert_eq!((blocks[0].section.join("/"), blocks[0].first_line), ("Leave/Sick days".into(), Some(1)));
    }

    #[test]
    fn a_format_is_found_by_its_name() {
        for format in Format::ALL {
            assert_eq!(format.name().parse::<Format>(), Ok(format));
        }
        assert!("PDF".parse::<Format>().unwrap_err().contains("one of text, markdown, pdf"));
    }

    #[test]
    fn extensions_name_formats_whatever_their_case() {
        assert_eq!(Format::of_path(Path::new("a/Handbook.PDF")), Some(Format::Pdf));
        assert_eq!(Format::of_path(Path::new("policies.docx")), Some(Format::Docx));
        assert_eq!(Format::of_path(Path::new("photo.jpg")), None);
    }
}
