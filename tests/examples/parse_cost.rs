//! What parsing each document in a child process costs: small HTML pages, PDFs and DOCX
//! files read in this process (`lore_documents::read`) and through the sandbox
//! (`lore::ingest::files::blocks_of`, as ingest reads them), one after the other; then the
//! hostile corpus through the sandbox, with the e2e tests' limits.
//!
//! cargo build -p lore --bins && cargo run -p lore-tests --example parse_cost [-- FILES]

use std::path::Path;
use std::time::{Duration, Instant};

use lore::config::ParsingLimits;
use lore::ingest::files::blocks_of;
use lore::ingest::sandbox::Sandbox;
use lore_documents::Format;
use lore_tests::hostile;

fn main() {
    lore_tests::init();
    let files: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(200);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let sandbox = Sandbox::locate(&ParsingLimits::default()).expect("the built lore (cargo build -p lore --bins)");
    println!("{files} documents of each format, read one after the other");
    println!(
        "{:<6} {:>16} {:>16} {:>12} {:>16}",
        "format", "in-process ms", "sandboxed ms", "boundary ms", "child peak MiB"
    );
    for format in [Format::Html, Format::Pdf, Format::Docx] {
        let documents: Vec<Vec<u8>> = (0..files).map(|i| document(format, i)).collect();
        let started = Instant::now();
        for bytes in &documents {
            lore_documents::read(format, bytes).expect("an honest document");
        }
        let in_process = per_file(started.elapsed(), files);
        let path = Path::new("bench").with_extension(format.name());
        let (started, mut peak_kib) = (Instant::now(), 0);
        for bytes in &documents {
            let parsed = runtime.block_on(blocks_of(&sandbox, &path, format, bytes.clone(), false)).unwrap();
            peak_kib = peak_kib.max(parsed.peak_memory_kib.unwrap_or(0));
        }
        let sandboxed = per_file(started.elapsed(), files);
        println!(
            "{:<6} {in_process:>16.2} {sandboxed:>16.2} {:>12.2} {:>16}",
            format.name(),
            sandboxed - in_process,
            peak_kib / 1024
        );
    }

    let dir = tempfile::tempdir().unwrap();
    hostile::write_corpus(dir.path());
    let limits = ParsingLimits { memory_mib: 256, cpu_secs: 5, timeout_secs: 60 };
    let sandbox = Sandbox::locate(&limits).unwrap();
    println!("\nthe hostile corpus, limits {limits:?}");
    for name in [
        hostile::SELF_PARENT,
        hostile::SELF_DRAWING_FORM,
        hostile::INFLATE_BOMB,
        hostile::REPEATED_CONTENTS,
        hostile::NESTED_ELEMENTS,
        hostile::NESTED_DIVS,
        hostile::MANY_STYLES,
    ] {
        let path = dir.path().join(name);
        let format = Format::of_path(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let started = Instant::now();
        let outcome = match runtime.block_on(blocks_of(&sandbox, Path::new(name), format, bytes, false)) {
            Ok(parsed) => format!("read, peak {} MiB", parsed.peak_memory_kib.unwrap_or(0) / 1024),
            Err(skipped) => skipped.message,
        };
        println!("{name:<22} {:>7.2} s  {outcome}", started.elapsed().as_secs_f64());
    }
}

fn per_file(elapsed: Duration, files: usize) -> f64 {
    elapsed.as_secs_f64() * 1000.0 / files as f64
}

/// The `i`th small honest document: a page of a few paragraphs under headings.
fn document(format: Format, i: usize) -> Vec<u8> {
    let text = format!("Document {i}: the ferry leaves the north pier every forty minutes and waits for high tide.");
    match format {
        Format::Html => {
            let body: String = (0..8).map(|p| format!("<h2>Part {p}</h2><p>{text} Paragraph {p}.</p>")).collect();
            format!("<html><head><title>Doc {i}</title></head><body><main><h1>Doc {i}</h1>{body}</main></body></html>")
                .into_bytes()
        }
        Format::Pdf => hostile::honest_pdf(&text),
        Format::Docx => hostile::honest_docx(&format!("Doc {i}"), &text),
        _ => unreachable!("not measured"),
    }
}
