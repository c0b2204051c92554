//! Hostile documents, made byte by byte at test time (nothing binary is committed), and
//! honest ones of every format to set beside them or to mutate. Each hostile one hurt the
//! daemon before documents were parsed in a child process (docs/RELIABILITY.md says how).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use flate2::write::ZlibEncoder;
use flate2::Compression;

/// A PDF of `objects`, numbered from 1 (the first is the catalog), with a correct xref
/// table.
pub fn pdf(objects: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        writeln!(out, "{} 0 obj", i + 1).unwrap();
        out.extend_from_slice(object);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    write!(out, "xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).unwrap();
    for offset in offsets {
        writeln!(out, "{offset:010} 00000 n ").unwrap();
    }
    write!(out, "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).unwrap();
    out
}

/// A PDF object: a dictionary.
fn dict(entries: &str) -> Vec<u8> {
    format!("<< {entries} >>").into_bytes()
}

/// A PDF object: a stream with `entries` besides its length.
fn stream(entries: &str, data: &[u8]) -> Vec<u8> {
    let mut out = format!("<< {entries} /Length {} >>\nstream\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\nendstream");
    out
}

const CATALOG: &str = "/Type /Catalog /Pages 2 0 R";
const PAGES: &str = "/Type /Pages /Kids [3 0 R] /Count 1";
const HELVETICA: &str = "/Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >>";

/// An honest one-page PDF that says `text` (Helvetica, which every reader knows).
pub fn honest_pdf(text: &str) -> Vec<u8> {
    let content = format!("BT /F1 12 Tf 72 720 Td ({text}) Tj ET");
    pdf(&[
        dict(CATALOG),
        dict(PAGES),
        dict(&format!(
            "/Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << {HELVETICA} >> /Contents 4 0 R"
        )),
        stream("", content.as_bytes()),
    ])
}

/// A page that is its own parent and has no MediaBox: a reader looking up the inherited
/// box climbs the page tree forever (pdf-extract's `get_inherited` has no visited set).
pub fn self_parent_pdf() -> Vec<u8> {
    pdf(&[dict(CATALOG), dict(PAGES), dict("/Type /Page /Parent 3 0 R /Contents 4 0 R"), stream("", b"BT ET")])
}

/// A form XObject that draws itself (`/F1 Do` inside `/F1`).
pub fn self_drawing_form_pdf() -> Vec<u8> {
    let resources = "/Resources << /XObject << /F1 5 0 R >> >>";
    pdf(&[
        dict(CATALOG),
        dict(PAGES),
        dict(&format!("/Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] {resources} /Contents 4 0 R")),
        stream("", b"/F1 Do"),
        stream(&format!("/Type /XObject /Subtype /Form /BBox [0 0 612 792] {resources}"), b"/F1 Do"),
    ])
}

/// A page whose content stream is deflated twice (`[/FlateDecode /FlateDecode]`) and
/// inflates to `gib` GiB: a few KiB on disk.
pub fn inflate_bomb_pdf(gib: u64) -> Vec<u8> {
    pdf(&[
        dict(CATALOG),
        dict(PAGES),
        dict("/Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"),
        stream("/Filter [/FlateDecode /FlateDecode]", &deflate(&deflated_zeros(gib << 30))),
    ])
}

/// A page whose content lists one 1 MiB stream `times` times: it inflates to `times` MiB.
pub fn repeated_contents_pdf(times: usize) -> Vec<u8> {
    let contents = vec!["4 0 R"; times].join(" ");
    let spaces = deflate(&vec![b' '; 1 << 20]);
    pdf(&[
        dict(CATALOG),
        dict(PAGES),
        dict(&format!("/Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents [{contents}]")),
        stream("/Filter /FlateDecode", &spaces),
    ])
}

/// `bytes` as a zlib stream.
pub fn deflate(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A zlib stream of `n` zero bytes (`n` a multiple of 1 MiB), made without compressing
/// them all: after a sync flush, the compressor turns each further MiB of zeros into the
/// same bytes (its window holds only zeros either way), so one such segment is repeated,
/// then a final empty block and the Adler-32 of `n` zeros follow.
pub fn deflated_zeros(n: u64) -> Vec<u8> {
    const SEGMENT: u64 = 1 << 20;
    assert!(n >= 3 * SEGMENT && n.is_multiple_of(SEGMENT));
    let zeros = vec![0u8; SEGMENT as usize];
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::best());
    let mut segment = || {
        encoder.write_all(&zeros).unwrap();
        encoder.flush().unwrap(); // a sync flush: byte-aligned, everything written out
        std::mem::take(encoder.get_mut())
    };
    let (first, second, third) = (segment(), segment(), segment());
    assert_eq!(second, third, "segments of zeros after the first compress alike");
    let mut out = first;
    for _ in 1..n / SEGMENT {
        out.extend_from_slice(&second);
    }
    out.extend_from_slice(&[0x03, 0x00]); // a final, empty block (fixed codes)
    let adler = ((n % 65521) << 16) | 1; // a = 1 + 0 + … , b = n · a
    out.extend_from_slice(&(adler as u32).to_be_bytes());
    out
}

/// An HTML page whose body is nested `depth` elements deep (custom elements, which the
/// HTML parser reads in linear time), with a fact at the bottom.
pub fn nested_elements_html(depth: usize) -> String {
    format!(
        "<html><body>{}<p>The deepest room holds a brass key.</p>{}</body></html>",
        "<x-box>".repeat(depth),
        "</x-box>".repeat(depth)
    )
}

/// An HTML page of `depth` nested `<div>`s: each opening tag makes the HTML parser look
/// through every open element (the spec's "has a p element in button scope"), so its time
/// grows with the square of the depth: hours at 300,000.
pub fn nested_divs_html(depth: usize) -> String {
    format!("<html><body>{}deep{}</body></html>", "<div>".repeat(depth), "</div>".repeat(depth))
}

/// A zip archive of `(name, bytes)` parts.
pub fn zip(parts: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in parts {
        writer.start_file(name.as_str(), options).unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

const W: &str = "xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\"";

/// A DOCX with a heading and `paragraphs`, each `(style id, text)`.
fn docx(styles: &str, paragraphs: &[(String, String)], extra_parts: usize) -> Vec<u8> {
    let body: String = paragraphs
        .iter()
        .map(|(style, text)| {
            let run = if text.is_empty() { String::new() } else { format!("<w:r><w:t>{text}</w:t></w:r>") };
            format!("<w:p><w:pPr><w:pStyle w:val=\"{style}\"/></w:pPr>{run}</w:p>")
        })
        .collect();
    let mut parts = vec![
        ("[Content_Types].xml".to_string(), b"<?xml version=\"1.0\"?><Types/>".to_vec()),
        ("word/styles.xml".to_string(), format!("<w:styles {W}>{styles}</w:styles>").into_bytes()),
        ("word/document.xml".to_string(), format!("<w:document {W}><w:body>{body}</w:body></w:document>").into_bytes()),
    ];
    parts.extend(
        (0..extra_parts).map(|i| (format!("word/media/part{i}.xml"), format!("<part n=\"{i}\"/>").into_bytes())),
    );
    zip(&parts)
}

fn style(id: &str, name: &str) -> String {
    format!("<w:style w:type=\"paragraph\" w:styleId=\"{id}\"><w:name w:val=\"{name}\"/></w:style>")
}

/// An honest DOCX: a heading and `text` under it.
pub fn honest_docx(heading: &str, text: &str) -> Vec<u8> {
    let paragraphs = [("Heading1".to_string(), heading.to_string()), ("Normal".to_string(), text.to_string())];
    docx(&(style("Heading1", "heading 1") + &style("Normal", "Normal")), &paragraphs, 0)
}

/// A DOCX with `n` heading styles, `n` paragraphs each in one of them (one with words, the
/// rest empty) and `parts` further parts: looking each paragraph's style up in a list of
/// the heading styles took `n`² steps.
pub fn many_styles_docx(n: usize, parts: usize) -> Vec<u8> {
    let styles: String = (0..n).map(|i| style(&format!("S{i}"), &format!("heading {}", 1 + i % 9))).collect();
    let paragraphs: Vec<(String, String)> = (0..n)
        .map(|i| (format!("S{}", n - 1 - i), if i == 0 { "The style catalogue.".into() } else { String::new() }))
        .collect();
    docx(&styles, &paragraphs, parts)
}

/// An honest ODT: a heading and `text` under it.
pub fn honest_odt(heading: &str, text: &str) -> Vec<u8> {
    let content = format!(
        "<office:document-content xmlns:office=\"urn:oasis:names:tc:opendocument:xmlns:office:1.0\" \
         xmlns:text=\"urn:oasis:names:tc:opendocument:xmlns:text:1.0\"><office:body><office:text>\
         <text:h text:outline-level=\"1\">{heading}</text:h><text:p>{text}</text:p></office:text></office:body>\
         </office:document-content>"
    );
    zip(&[
        ("mimetype".to_string(), b"application/vnd.oasis.opendocument.text".to_vec()),
        ("content.xml".to_string(), content.into_bytes()),
    ])
}

/// The fact an honest file beside the corpus holds, and a question it answers.
pub const HONEST_FACT: &str =
    "The keeper of the Saltmarsh lighthouse is Ottoline Brae. She rings the fog bell at dusk every evening.\n";
pub const HONEST_QUESTION: &str = "Who is the keeper of the Saltmarsh lighthouse?";

/// What each hostile file in [`write_corpus`] is, by name.
pub const SELF_PARENT: &str = "self-parent.pdf";
pub const SELF_DRAWING_FORM: &str = "self-drawing-form.pdf";
pub const INFLATE_BOMB: &str = "inflate-bomb.pdf";
pub const REPEATED_CONTENTS: &str = "repeated-contents.pdf";
pub const NESTED_ELEMENTS: &str = "nested-elements.html";
pub const NESTED_DIVS: &str = "nested-divs.html";
pub const MANY_STYLES: &str = "many-styles.docx";
pub const FIFO: &str = "notes.md";
pub const GROWING: &str = "growing.txt";
pub const HONEST: &str = "honest.md";

/// Writes the hostile corpus and an honest Markdown file into `dir`: the documents above,
/// a FIFO named `notes.md`, and an empty `growing.txt` for [`Grower`]. A few MiB on disk.
pub fn write_corpus(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).unwrap();
    write(SELF_PARENT, &self_parent_pdf());
    write(SELF_DRAWING_FORM, &self_drawing_form_pdf());
    write(INFLATE_BOMB, &inflate_bomb_pdf(3));
    write(REPEATED_CONTENTS, &repeated_contents_pdf(20_000));
    write(NESTED_ELEMENTS, nested_elements_html(300_000).as_bytes());
    write(NESTED_DIVS, nested_divs_html(300_000).as_bytes());
    write(MANY_STYLES, &many_styles_docx(100_000, 5_000));
    write(GROWING, b"");
    write(HONEST, format!("# Lighthouse\n\n{HONEST_FACT}").as_bytes());
    make_fifo(&dir.join(FIFO));
}

/// A FIFO (named pipe) at `path`: opening it for reading waits for a writer.
pub fn make_fifo(path: &Path) {
    let made = std::process::Command::new("mkfifo").arg(path).status().expect("mkfifo (coreutils)");
    assert!(made.success(), "mkfifo {}", path.display());
}

/// Appends to a file from another thread until dropped (or `most` bytes are written):
/// the file grows while it is read.
pub struct Grower {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Grower {
    pub fn start(path: PathBuf, most: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut file = std::fs::OpenOptions::new().append(true).create(true).open(&path).unwrap();
                let line = b"another line of a log that never stops growing\n".repeat(1024);
                let mut written = 0;
                while !stop.load(Ordering::Relaxed) && written < most {
                    file.write_all(&line).unwrap();
                    written += line.len() as u64;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            })
        };
        Self { stop, thread: Some(thread) }
    }
}

impl Drop for Grower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
