//! Documents made by real tools (PDF by fpdf2, DOCX by python-docx, HTML by hand; see
//! `tests/python/make_documents.py`): ingested with their pages and sections, bad ones
//! skipped in words, and answers citing the page or section that holds the answer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lore::app::{App, Load};
use lore::ingest::{ingest, Progress::Quiet, Settings, SkipReason};
use lore_tests::daemon::TelegramDaemon;
use lore_tests::fake_telegram::{strip_tags, Chat};
use lore_tests::models::{config, venv_python};
use lore_tests::wait_until;

/// The documents, written into `dir` by the venv's Python tools.
fn make_documents(dir: &Path) -> PathBuf {
    let docs = dir.join("docs");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/make_documents.py");
    let run = std::process::Command::new(venv_python()).arg(script).arg(&docs).output().expect("the venv's python");
    assert!(
        run.status.success(),
        "making the test documents failed (run scripts/setup --test-models for fpdf2 and python-docx): {}",
        String::from_utf8_lossy(&run.stderr)
    );
    docs
}

#[tokio::test(flavor = "multi_thread")]
async fn documents_are_ingested_with_pages_and_sections_and_bad_ones_are_skipped_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let docs = make_documents(dir.path());
    let app = App::load(config(dir.path(), ""), Load::WithoutGenerator).await.unwrap();
    let kb = app.kb_for_ingest("docs").await.unwrap();
    let report =
        ingest(&kb, app.embedder.as_ref(), std::slice::from_ref(&docs), &Settings::new(&app.config.chunking), Quiet)
            .await
            .unwrap();

    let why =
        |name: &str| report.skipped.iter().find(|s| s.path.ends_with(name)).map(|s| (s.reason, s.message.clone()));
    let expect = [
        ("scanned.pdf", SkipReason::NeedsOcr, "needs OCR"),
        ("encrypted.pdf", SkipReason::Encrypted, "encrypted"),
        ("corrupt.pdf", SkipReason::Corrupt, "not a readable PDF"),
        ("bomb.docx", SkipReason::ZipBomb, "zip bomb"),
        ("notes.pdf", SkipReason::WrongType, "named as PDF but looks like text"),
        ("huge.html", SkipReason::TooLarge, "over max_file_bytes"),
    ];
    for (name, reason, words) in expect {
        let (got, message) = why(name).unwrap_or_else(|| panic!("{name} is skipped: {report}"));
        assert_eq!(got, reason, "{message}");
        assert!(message.contains(name) && message.contains(words), "{message}");
    }
    assert_eq!(report.skipped.len(), expect.len(), "{report}");
    assert_eq!(report.changed_files, 4, "the four good documents: {report}");
    let summary = report.to_string();
    assert!(summary.contains("6 skipped") && summary.contains("1 encrypted"), "{summary}");

    let chunks = kb.all_chunks().await.unwrap();
    assert!(chunks.iter().all(|c| !c.source.contains("/bad/")), "nothing of a skipped file is stored");
    let of = |file: &'static str| chunks.iter().filter(move |c| c.source.ends_with(file));
    // The PDF: one chunk per page here, cited by page, without the running header and footer.
    let pages: Vec<String> = of("handbook.pdf").map(|c| c.location()).collect();
    assert_eq!(pages, ["p. 1", "p. 2", "p. 3", "p. 4"]);
    for c in of("handbook.pdf") {
        assert!(!c.text.contains("ACME Staff Handbook") && !c.text.contains("Page "), "{:?}", c.text);
    }
    let vacation = of("handbook.pdf").find(|c| c.page == Some(3)).unwrap();
    assert!(vacation.text.contains("carry over at most five unused vacation days"), "{:?}", vacation.text);
    // Two columns read one after the other, not line by line across.
    let columns: String = of("columns.pdf").map(|c| c.text.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert!(columns.contains("leaves every forty minutes from the north pier"), "{columns:?}");
    assert!(columns.contains("Inspect the brood frames every week"), "{columns:?}");
    // Word: sections from the heading styles, the table as rows.
    let sick = of("policies.docx").find(|c| c.text.contains("call your manager")).unwrap();
    assert_eq!(sick.location(), "§ Leave › Sick days");
    let equipment = of("policies.docx").find(|c| c.text.contains("Laptop")).unwrap();
    assert!(equipment.text.contains("Laptop | IT desk | last working day"), "{:?}", equipment.text);
    assert_eq!(equipment.section.as_deref(), Some("Equipment"));
    // HTML: the main content only, under its headings.
    let html: String = of("guide.html").map(|c| c.text.clone()).collect();
    for gone in ["Home", "Sitemap", "cookies", "Accept all", "analytics", "Copyright"] {
        assert!(!html.contains(gone), "{gone:?} in {html:?}");
    }
    let hours = of("guide.html").find(|c| c.text.contains("opens at ten")).unwrap();
    assert_eq!(hours.location(), "§ Lighthouse guide › Opening hours");

    // Unchanged documents are not read into the store again.
    let again =
        ingest(&kb, app.embedder.as_ref(), std::slice::from_ref(&docs), &Settings::new(&app.config.chunking), Quiet)
            .await
            .unwrap();
    assert_eq!((again.unchanged_files, again.chunks_embedded), (4, 0), "{again}");
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_cite_the_page_or_section_that_holds_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let docs = make_documents(dir.path());
    std::fs::remove_dir_all(docs.join("bad")).unwrap();
    let kb = format!("knowledge_bases:\n  docs:\n    sources: [{}]\n", docs.display());
    let daemon = TelegramDaemon::start(dir.path(), &kb, "docs", "").await;
    let questions = [
        (1, "How many unused vacation days can employees carry over into the next year?", "handbook.pdf (p. 3)"),
        (2, "When must I call my manager if I am ill?", "policies.docx (§ Leave › Sick days)"),
        (3, "When does the lighthouse museum open?", "guide.html (§ Lighthouse guide › Opening hours)"),
    ];
    for (chat, question, _) in questions {
        daemon.fake.push_message(Chat::Private(chat), chat, question);
    }
    for (chat, question, cited) in questions {
        let shown = || daemon.fake.shown_in(chat).iter().map(|m| strip_tags(m)).collect::<Vec<_>>();
        wait_until(Duration::from_secs(180), "the answer with its sources", || {
            shown().iter().any(|m| m.contains("Sources"))
        })
        .await;
        let answer = shown().concat();
        assert!(answer.contains(cited), "{question} should cite {cited}: {answer}");
    }
    daemon.stop().await;
}
