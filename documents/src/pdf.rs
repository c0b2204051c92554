//! PDF: the text of each page in the order its content draws it, with what a reader skips
//! taken out: running headers and footers (the same line at the top or bottom of most
//! pages, page numbers aside), and hyphens that only broke a word at a line's end.

use std::collections::HashMap;

use crate::{squeeze, Block, Format, Unreadable};

/// Lines at each end of a page looked at for running headers and footers.
const EDGE_LINES: usize = 2;

pub(crate) fn blocks(bytes: &[u8]) -> Result<Vec<Block>, Unreadable> {
    // The reader panics on some malformed files; one bad PDF must not end an ingest.
    let pages = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem_by_pages(bytes))
        .map_err(|_| Unreadable::Corrupt { format: Format::Pdf, why: "the PDF reader gave up on it".into() })?
        .map_err(|e| match e {
            pdf_extract::OutputError::PdfError(pdf_extract::Error::Decryption(_)) => Unreadable::Encrypted,
            e => Unreadable::Corrupt { format: Format::Pdf, why: e.to_string() },
        })?;
    if pages.iter().all(|p| p.trim().is_empty()) {
        return Err(Unreadable::NeedsOcr);
    }
    let running = running_lines(&pages);
    Ok(pages
        .iter()
        .enumerate()
        .map(|(i, page)| Block { text: clean(page, &running), page: Some(i as u32 + 1), ..Block::default() })
        .collect())
}

/// A line as compared across pages: digits stand for any digits ("Page 3 of 12").
fn shape(line: &str) -> String {
    squeeze(line).chars().map(|c| if c.is_ascii_digit() { '#' } else { c }).collect()
}

/// The first and last [`EDGE_LINES`] non-blank lines of a page.
fn edges(page: &str) -> Vec<&str> {
    let lines: Vec<&str> = page.lines().filter(|l| !l.trim().is_empty()).collect();
    let n = lines.len();
    lines.into_iter().enumerate().filter(|(i, _)| *i < EDGE_LINES || *i + EDGE_LINES >= n).map(|(_, l)| l).collect()
}

/// Shapes of lines at the top or bottom of at least half the pages (three pages at least).
fn running_lines(pages: &[String]) -> Vec<String> {
    if pages.len() < 3 {
        return Vec::new();
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for page in pages {
        let mut shapes: Vec<String> = edges(page).into_iter().map(shape).collect();
        shapes.sort();
        shapes.dedup();
        for s in shapes {
            *seen.entry(s).or_default() += 1;
        }
    }
    seen.into_iter().filter(|(s, n)| !s.is_empty() && *n * 2 >= pages.len()).map(|(s, _)| s).collect()
}

/// The page without its running lines, with words broken at a line's end joined again.
fn clean(page: &str, running: &[String]) -> String {
    let edge = edges(page);
    let lines: Vec<&str> = page.lines().filter(|l| !(edge.contains(l) && running.contains(&shape(l)))).collect();
    let mut text = String::new();
    for line in lines {
        let line = line.trim_end();
        let broken = text.ends_with('-')
            && text[..text.len() - 1].chars().last().is_some_and(char::is_alphabetic)
            && line.trim_start().chars().next().is_some_and(char::is_lowercase);
        if broken {
            text.pop();
            text.push_str(line.trim_start());
        } else {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(line);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_headers_and_page_numbers_go_and_broken_words_are_joined() {
        let topics = ["leave", "pay", "travel", "safety"];
        let pages: Vec<String> = (1..=4)
            .map(|n| {
                let topic = topics[n - 1];
                format!("ACME Staff Handbook\n\nAbout {topic}: infor-\nmation on {topic}.\n\nPage {n} of 4\n")
            })
            .collect();
        let running = running_lines(&pages);
        let page = clean(&pages[1], &running);
        assert!(!page.contains("ACME Staff Handbook") && !page.contains("Page 2 of 4"), "{page}");
        assert!(page.contains("About pay: information on pay."), "{page}");
        // A hyphen that belongs to the word stays.
        assert_eq!(clean("A well-\nKnown case", &[]), "A well-\nKnown case");
    }

    #[test]
    fn a_line_on_only_some_pages_stays() {
        let pages: Vec<String> =
            ["Intro\nbody one", "Chapter\nbody two", "Other\nbody three", "Last\nbody four"].map(String::from).into();
        assert!(running_lines(&pages).is_empty());
    }

    #[test]
    fn a_file_that_is_not_a_pdf_inside_is_corrupt_not_a_crash() {
        let err = blocks(b"%PDF-1.7\nthis is not really a pdf").unwrap_err();
        assert!(matches!(err, Unreadable::Corrupt { format: Format::Pdf, .. }), "{err:?}");
    }
}
