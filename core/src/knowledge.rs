//! What a knowledge base holds and what a search finds.

use sha2::{Digest, Sha256};

/// A piece of a source file, as stored (without its vector).
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Content hash of source path and text.
    pub id: String,
    /// The file it came from, as the user named it.
    pub source: String,
    /// Index of the chunk within its file (0-based).
    pub position: u32,
    /// First and last line (1-based) of the chunk in its file; 0 for documents whose lines
    /// mean nothing to a reader (PDF, HTML, DOCX).
    pub line_start: u32,
    pub line_end: u32,
    /// 1-based page (PDF).
    pub page: Option<u32>,
    /// The headings it is under, outermost first, joined with " › " (Markdown, HTML, DOCX).
    pub section: Option<String>,
    pub text: String,
}

impl Chunk {
    pub fn new(source: &str, position: u32, line_start: u32, line_end: u32, text: String) -> Self {
        Self {
            id: chunk_id(source, &text),
            source: source.to_string(),
            position,
            line_start,
            line_end,
            page: None,
            section: None,
            text,
        }
    }

    /// Where in its file the chunk is, for citing: "p. 12", "§ Leave › Sick days",
    /// "§ Leave, lines 3-9", "lines 3-9", or "part 4" when nothing else is known.
    pub fn location(&self) -> String {
        let lines = match (self.line_start, self.line_end) {
            (0, _) => None,
            (a, b) if a == b => Some(format!("line {a}")),
            (a, b) => Some(format!("lines {a}-{b}")),
        };
        match (self.page, &self.section, lines) {
            (Some(page), _, _) => format!("p. {page}"),
            (None, Some(section), Some(lines)) => format!("§ {section}, {lines}"),
            (None, Some(section), None) => format!("§ {section}"),
            (None, None, Some(lines)) => lines,
            (None, None, None) => format!("part {}", self.position + 1),
        }
    }
}

/// Stable id of a chunk: the same file path and text always give the same id.
pub fn chunk_id(source: &str, text: &str) -> String {
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update([0]);
    h.update(text.as_bytes());
    h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// A chunk found by a search, with a score where higher is better.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub chunk: Chunk,
    /// Retriever-specific: cosine similarity for vector search, BM25 for full text, fused
    /// rank score for hybrid. Rerankers may replace it.
    pub score: f32,
    /// Cosine similarity between the question and the chunk. Every built-in retriever
    /// fills it, so abstention (`min_score`) means the same whichever retriever found the
    /// chunk; `None` only from a retriever that cannot know it.
    pub similarity: Option<f32>,
    /// The chunk's BM25 score when full-text search found it (kept through fusion), one of
    /// the signals the answer's confidence is judged on.
    pub lexical: Option<f32>,
}
