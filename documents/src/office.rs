//! DOCX (Word) and ODT (LibreOffice): zip archives of XML. Paragraphs become text,
//! headings start sections, each table row becomes one line of `cell | cell`.

use std::collections::HashMap;
use std::io::Read;

use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

use crate::{squeeze, Block, Format, Unreadable};

/// Most bytes one XML part may expand to: a real document's text is far smaller, and a
/// zip bomb (a tiny archive that expands to gigabytes) stops here.
const MAX_PART_BYTES: u64 = 64 * 1024 * 1024;

pub(crate) fn docx_blocks(bytes: &[u8]) -> Result<Vec<Block>, Unreadable> {
    let mut archive = open(bytes, Format::Docx)?;
    let styles = match part(&mut archive, "word/styles.xml", Format::Docx) {
        Ok(xml) => heading_styles(&xml),
        Err(Unreadable::Corrupt { .. }) => HashMap::new(),
        Err(e) => return Err(e),
    };
    let document = part(&mut archive, "word/document.xml", Format::Docx)?;
    Walker::new(Dialect::Docx { styles }).walk(&document, Format::Docx)
}

pub(crate) fn odt_blocks(bytes: &[u8]) -> Result<Vec<Block>, Unreadable> {
    let mut archive = open(bytes, Format::Odt)?;
    let content = part(&mut archive, "content.xml", Format::Odt)?;
    Walker::new(Dialect::Odt).walk(&content, Format::Odt)
}

type Archive<'a> = zip::ZipArchive<std::io::Cursor<&'a [u8]>>;

fn open(bytes: &[u8], format: Format) -> Result<Archive<'_>, Unreadable> {
    zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| Unreadable::Corrupt { format, why: e.to_string() })
}

/// One XML part, read no further than [`MAX_PART_BYTES`] whatever its header claims.
fn part(archive: &mut Archive<'_>, name: &str, format: Format) -> Result<String, Unreadable> {
    let corrupt = |why: String| Unreadable::Corrupt { format, why };
    let file = archive.by_name(name).map_err(|e| corrupt(format!("{name}: {e}")))?;
    let mut xml = String::new();
    file.take(MAX_PART_BYTES + 1).read_to_string(&mut xml).map_err(|e| corrupt(format!("{name}: {e}")))?;
    if xml.len() as u64 > MAX_PART_BYTES {
        return Err(Unreadable::TooLargeInside(format!("{name} expands to over {} MiB", MAX_PART_BYTES >> 20)));
    }
    Ok(xml)
}

/// Word style ids whose style is a heading, with its level: `Heading1` named "heading 1",
/// or any style with an outline level. A map: every paragraph looks its style up, and a
/// document may define thousands.
fn heading_styles(xml: &str) -> HashMap<String, usize> {
    let mut reader = Reader::from_str(xml);
    let mut styles = HashMap::new();
    let mut current: Option<String> = None;
    while let Ok(event) = reader.read_event() {
        match event {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                "style" => current = attribute(&e, "w:styleId"),
                "name" => {
                    let level = attribute(&e, "w:val").and_then(|name| heading_level(&name));
                    if let (Some(id), Some(level)) = (&current, level) {
                        styles.entry(id.clone()).or_insert(level);
                    }
                }
                "outlineLvl" => {
                    // Level 9 is Word's "body text".
                    let level = attribute(&e, "w:val").and_then(|v| v.parse::<usize>().ok()).filter(|&l| l < 9);
                    if let (Some(id), Some(level)) = (&current, level) {
                        styles.entry(id.clone()).or_insert(level + 1);
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    styles
}

/// "heading 2" (Word's built-in names, whatever the language of the UI) -> 2.
fn heading_level(style_name: &str) -> Option<usize> {
    let level = style_name.to_ascii_lowercase().strip_prefix("heading")?.trim().parse::<usize>().ok()?;
    (1..=9).contains(&level).then_some(level)
}

fn attribute(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.try_get_attribute(name)
        .ok()
        .flatten()
        .and_then(|a| a.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok())
        .map(|v| v.into_owned())
}

enum Dialect {
    Docx { styles: HashMap<String, usize> },
    Odt,
}

/// Walks the document's XML once, in order.
struct Walker {
    dialect: Dialect,
    blocks: Vec<Block>,
    path: Vec<(usize, String)>,
    /// The paragraph being read, and its heading level if it is one.
    paragraph: String,
    level: Option<usize>,
    /// Paragraphs open (ODT nests them in text boxes and notes); the outermost decides.
    paragraph_depth: usize,
    /// Whether text events are document text (inside `w:t` in DOCX, a paragraph in ODT).
    text_depth: usize,
    /// Cells of the table row being read; a table nested in a cell reads as that cell's text.
    row: Vec<String>,
    cell: String,
    table_depth: usize,
}

/// What an element means, whichever dialect names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Paragraph,
    /// ODT's `text:h`, with its outline level.
    Heading,
    /// DOCX's `w:t`: the only place its text is.
    Run,
    /// DOCX's `w:pStyle` and `w:outlineLvl`: a paragraph's style.
    Style,
    OutlineLevel,
    Tab,
    Break,
    /// ODT's `text:s`: `text:c` spaces.
    Spaces,
    Table,
    Row,
    Cell,
    Other,
}

impl Walker {
    fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            blocks: vec![Block::default()],
            path: Vec::new(),
            paragraph: String::new(),
            level: None,
            paragraph_depth: 0,
            text_depth: 0,
            row: Vec::new(),
            cell: String::new(),
            table_depth: 0,
        }
    }

    fn role(&self, name: &str) -> Role {
        match (&self.dialect, name) {
            (_, "p") => Role::Paragraph,
            (Dialect::Odt, "h") => Role::Heading,
            (Dialect::Docx { .. }, "t") => Role::Run,
            (Dialect::Docx { .. }, "pStyle") => Role::Style,
            (Dialect::Docx { .. }, "outlineLvl") => Role::OutlineLevel,
            (_, "tab") => Role::Tab,
            (Dialect::Docx { .. }, "br" | "cr") | (Dialect::Odt, "line-break") => Role::Break,
            (Dialect::Odt, "s") => Role::Spaces,
            (Dialect::Docx { .. }, "tbl") | (Dialect::Odt, "table") => Role::Table,
            (Dialect::Docx { .. }, "tr") | (Dialect::Odt, "table-row") => Role::Row,
            (Dialect::Docx { .. }, "tc") | (Dialect::Odt, "table-cell") => Role::Cell,
            _ => Role::Other,
        }
    }

    fn in_text(&self) -> bool {
        self.text_depth > 0
    }

    fn open(&mut self, e: &BytesStart<'_>) {
        match self.role(e.local_name().as_ref()) {
            Role::Paragraph | Role::Heading => {
                if self.paragraph_depth == 0 {
                    self.paragraph.clear();
                    self.level = None;
                }
                self.paragraph_depth += 1;
                if let Dialect::Odt = self.dialect {
                    self.text_depth += 1;
                    if self.role(e.local_name().as_ref()) == Role::Heading {
                        let level = attribute(e, "text:outline-level").and_then(|l| l.parse().ok());
                        self.level = Some(level.unwrap_or(1));
                    }
                }
            }
            Role::Run => self.text_depth += 1,
            Role::Style => {
                if let (Dialect::Docx { styles }, Some(id)) = (&self.dialect, attribute(e, "w:val")) {
                    if let Some(level) = styles.get(&id) {
                        self.level = Some(*level);
                    }
                }
            }
            Role::OutlineLevel => {
                if let Some(level) = attribute(e, "w:val").and_then(|v| v.parse::<usize>().ok()) {
                    // Level 9 is Word's "body text".
                    self.level = (level < 9).then_some(level + 1);
                }
            }
            // A `w:tab` with a value is a tab stop's definition, not a tab in the text.
            Role::Tab if attribute(e, "w:val").is_none() && self.paragraph_depth > 0 => self.paragraph.push('\t'),
            Role::Break if self.paragraph_depth > 0 => self.paragraph.push('\n'),
            Role::Spaces if self.in_text() => {
                let n = attribute(e, "text:c").and_then(|c| c.parse::<usize>().ok()).unwrap_or(1);
                self.paragraph.push_str(&" ".repeat(n.min(64)));
            }
            Role::Table => self.table_depth += 1,
            Role::Row if self.table_depth == 1 => self.row.clear(),
            Role::Cell if self.table_depth == 1 => self.cell.clear(),
            _ => {}
        }
    }

    fn close(&mut self, name: &str) {
        match self.role(name) {
            Role::Paragraph | Role::Heading => {
                if let Dialect::Odt = self.dialect {
                    self.text_depth = self.text_depth.saturating_sub(1);
                }
                self.paragraph_depth = self.paragraph_depth.saturating_sub(1);
                if self.paragraph_depth == 0 {
                    self.end_paragraph();
                }
            }
            Role::Run => self.text_depth = self.text_depth.saturating_sub(1),
            Role::Cell if self.table_depth == 1 => self.row.push(squeeze(&self.cell)),
            Role::Row if self.table_depth == 1 => {
                let line = self.row.join(" | ");
                if !line.replace('|', "").trim().is_empty() {
                    self.push(&format!("{line}\n"));
                }
            }
            Role::Table => {
                self.table_depth = self.table_depth.saturating_sub(1);
                if self.table_depth == 0 {
                    self.push("\n");
                }
            }
            _ => {}
        }
    }

    /// A finished paragraph: a heading starts a section, text in a table goes to its
    /// cell, the rest to the current block.
    fn end_paragraph(&mut self) {
        let text = std::mem::take(&mut self.paragraph);
        let text = text.trim();
        if self.table_depth > 0 {
            if !self.cell.is_empty() {
                self.cell.push(' ');
            }
            self.cell.push_str(text);
        } else if let (Some(level), false) = (self.level, text.is_empty()) {
            self.path.retain(|(l, _)| *l < level);
            self.path.push((level, squeeze(text)));
            let section = self.path.iter().map(|(_, t)| t.clone()).collect();
            self.blocks.push(Block { text: format!("{}\n\n", squeeze(text)), section, ..Block::default() });
        } else if !text.is_empty() {
            self.push(&format!("{text}\n\n"));
        }
    }

    fn push(&mut self, text: &str) {
        self.blocks.last_mut().expect("one block at least").text.push_str(text);
    }

    fn walk(mut self, xml: &str, format: Format) -> Result<Vec<Block>, Unreadable> {
        let mut reader = Reader::from_str(xml);
        loop {
            let event = reader.read_event().map_err(|e| Unreadable::Corrupt {
                format,
                why: format!("XML error at byte {}: {e}", reader.error_position()),
            })?;
            match event {
                Event::Start(e) => self.open(&e),
                Event::Empty(e) => {
                    self.open(&e);
                    self.close(e.local_name().as_ref());
                }
                Event::End(e) => self.close(e.local_name().as_ref()),
                Event::Text(t) if self.in_text() => self.paragraph.push_str(&t.xml10_content()),
                Event::GeneralRef(r) if self.in_text() => self.paragraph.extend(entity(&r)),
                Event::Eof => break,
                _ => {}
            }
        }
        Ok(self.blocks)
    }
}

/// The character an entity or character reference stands for (`&amp;`, `&#233;`).
pub(crate) fn entity(r: &quick_xml::events::BytesRef<'_>) -> Option<char> {
    let named = match r.xml10_content().as_ref() {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => None,
    };
    named.or_else(|| r.resolve_char_ref().ok().flatten())
}
