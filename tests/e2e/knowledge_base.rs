//! Ingest: chunk ids are stable, unchanged files write nothing, changes replace, removals
//! delete, moved chunks get their new lines, bad files are skipped by name.

use std::path::Path;

use lore::app::{App, Load};
use lore::config::{ChunkUnit, Chunking};
use lore::ingest::{ingest, Progress::Quiet, Settings};
use lore_core::Chunk;
use lore_tests::models::config;

async fn app(dir: &Path) -> App {
    App::load(config(dir, ""), Load::WithoutGenerator).await.unwrap()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn reingest_is_a_noop_and_changes_replace_old_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    write(&docs.join("a.md"), "# Apples\n\nApples grow on trees in orchards.\n\nThey are picked in autumn.\n");
    write(&docs.join("b.txt"), "Bananas grow in the tropics.\n");
    write(&docs.join("ignored.jpg"), "not text");
    let app = app(dir.path()).await;
    let kb = app.kb_for_ingest("fruit").await.unwrap();
    let settings = Settings::new(&app.config.chunking);

    let first = ingest(&kb, app.embedder.as_ref(), std::slice::from_ref(&docs), &settings, Quiet).await.unwrap();
    assert_eq!((first.files, first.changed_files), (2, 2));
    let stored = kb.count().await.unwrap();
    assert_eq!(first.chunks_added, stored);
    let version = kb.version().await.unwrap();

    let again = ingest(&kb, app.embedder.as_ref(), std::slice::from_ref(&docs), &settings, Quiet).await.unwrap();
    assert_eq!((again.unchanged_files, again.changed_files, again.chunks_embedded), (2, 0, 0), "{again}");
    assert_eq!(kb.version().await.unwrap(), version, "an unchanged re-ingest wrote a new version");

    write(&docs.join("b.txt"), "Bananas grow in the tropics, on large herbs.\n");
    std::fs::remove_file(docs.join("a.md")).unwrap();
    let changed = ingest(&kb, app.embedder.as_ref(), std::slice::from_ref(&docs), &settings, Quiet).await.unwrap();
    assert_eq!((changed.changed_files, changed.removed_files), (1, 1), "{changed}");
    let chunks = kb.all_chunks().await.unwrap();
    assert_eq!(chunks.len(), 1);
    assert!(chunks[0].text.contains("large herbs"));
    assert!(chunks[0].source.ends_with("b.txt"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_files_are_skipped_naming_them_and_the_rest_is_ingested() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    write(&docs.join("good.txt"), "Fine text about gardens.\n");
    write(&docs.join("bad.txt"), "Once this was fine text.\n");
    write(&docs.join("big.md"), &"A long line of words. ".repeat(100));
    write(&docs.join("image.txt"), "PNG\0\0 binary");
    write(&dir.path().join("private/secret.md"), "Not for the bot.\n");
    std::os::unix::fs::symlink(dir.path().join("private"), docs.join("private")).unwrap();
    let app = app(dir.path()).await;
    let kb = app.kb_for_ingest("mixed").await.unwrap();
    let settings = Settings { max_file_bytes: 1000, ..Settings::new(&app.config.chunking) };
    ingest(&kb, app.embedder.as_ref(), std::slice::from_ref(&docs), &settings, Quiet).await.unwrap();
    let bad_before: Vec<String> = sources(&kb).await.into_iter().filter(|s| s.ends_with("bad.txt")).collect();
    assert_eq!(bad_before.len(), 1);

    // A file that turns bad keeps what was stored of it; the others go on.
    std::fs::write(docs.join("bad.txt"), b"line one\nline two \xff\xfe broken\n").unwrap();
    write(&docs.join("good.txt"), "Fine text about gardens and ponds.\n");
    let report = ingest(&kb, app.embedder.as_ref(), std::slice::from_ref(&docs), &settings, Quiet).await.unwrap();
    let messages: Vec<&str> = report.skipped.iter().map(|s| s.message.as_str()).collect();
    let says = |needles: &[&str]| messages.iter().any(|m| needles.iter().all(|n| m.contains(n)));
    assert!(says(&["bad.txt:2", "not valid UTF-8"]), "{messages:?}");
    assert!(says(&["big.md", "2.1 KiB", "max_file_bytes"]), "{messages:?}");
    assert!(says(&["image.txt", "binary"]), "{messages:?}");
    assert!(says(&["private", "outside the ingested folders"]), "{messages:?}");
    assert!(report.to_string().contains("4 skipped: 1 too large, 1 binary, 1 not UTF-8, 1 link outside"), "{report}");
    assert_eq!(report.changed_files, 1, "{report}");
    let stored = sources(&kb).await;
    assert!(stored.iter().any(|s| s.ends_with("good.txt")) && stored.contains(&bad_before[0]), "{stored:?}");
    assert!(!stored.iter().any(|s| s.ends_with("secret.md") || s.ends_with("big.md")), "{stored:?}");
    let good = kb.all_chunks().await.unwrap().into_iter().find(|c| c.source.ends_with("good.txt")).unwrap();
    assert!(good.text.contains("ponds"), "{good:?}");

    let photo = docs.join("photo.jpg");
    write(&photo, "JFIF");
    let err = ingest(&kb, app.embedder.as_ref(), &[photo], &settings, Quiet).await.unwrap_err().to_string();
    assert!(err.contains("photo.jpg") && err.contains("cannot ingest this file type"), "{err}");

    let err =
        ingest(&kb, app.embedder.as_ref(), &[dir.path().join("nope")], &settings, Quiet).await.unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn text_inserted_above_moves_the_stored_line_ranges_without_re_embedding() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    let paragraphs = [
        "Owls hunt at night and fly without a sound thanks to soft-edged feathers.",
        "Their eyes face forward and cannot move, so owls turn their heads instead.",
    ];
    write(&docs.join("owls.md"), &paragraphs.join("\n\n"));
    let app = app(dir.path()).await;
    let kb = app.kb_for_ingest("owls").await.unwrap();
    let settings = Settings::new(&Chunking { max_tokens: 24, overlap_tokens: 0, unit: ChunkUnit::Paragraph });
    let roots = std::slice::from_ref(&docs);
    let first = ingest(&kb, app.embedder.as_ref(), roots, &settings, Quiet).await.unwrap();
    assert_eq!(first.chunks_added, 2, "{first}");

    let inserted = "# Owls\n\nA short note, added later,\nover three lines.";
    write(&docs.join("owls.md"), &format!("{inserted}\n\n{}", paragraphs.join("\n\n")));
    let moved = ingest(&kb, app.embedder.as_ref(), roots, &settings, Quiet).await.unwrap();
    assert_eq!((moved.chunks_moved, moved.chunks_removed), (2, 0), "{moved}");
    assert_eq!(moved.chunks_embedded, moved.chunks_added, "moved chunks were embedded again: {moved}");

    // The places must be those a fresh ingest of the new file stores.
    let fresh = app.kb_for_ingest("owls_fresh").await.unwrap();
    ingest(&fresh, app.embedder.as_ref(), roots, &settings, Quiet).await.unwrap();
    let places = |chunks: Vec<Chunk>| -> Vec<(String, u32, u32, u32)> {
        chunks.into_iter().map(|c| (c.text, c.position, c.line_start, c.line_end)).collect()
    };
    let stored = places(kb.all_chunks().await.unwrap());
    assert_eq!(stored, places(fresh.all_chunks().await.unwrap()));
    let owls_turn = stored.iter().find(|c| c.0.starts_with("Their eyes")).unwrap();
    assert_eq!((owls_turn.2, owls_turn.3), (8, 8), "{stored:?}");
}

async fn sources(kb: &lore_knowledge::KnowledgeBase) -> Vec<String> {
    kb.stored_places().await.unwrap().into_keys().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_knowledge_base_searches_through_an_ann_index_and_still_finds_exact_matches() {
    use lore_knowledge::store::VECTOR_INDEX_MIN_ROWS;
    use lore_knowledge::KbStore;
    let dir = tempfile::tempdir().unwrap();
    let store = KbStore::open(dir.path()).await.unwrap();
    let dim = 32;
    let kb = store.open_or_create("large", dim).await.unwrap();
    // Deterministic pseudo-random unit vectors, one chunk each.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let n = VECTOR_INDEX_MIN_ROWS + 100;
    let rows: Vec<(Chunk, Vec<f32>)> = (0..n)
        .map(|i| {
            let mut v: Vec<f32> = (0..dim).map(|_| next()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            (Chunk::new(&format!("doc{}.txt", i / 500), i as u32, 1, 1, format!("chunk number {i}")), v)
        })
        .collect();
    let sources: Vec<String> = (0..n.div_ceil(500)).map(|d| format!("doc{d}.txt")).collect();
    kb.replace_sources(&rows, &sources).await.unwrap();
    assert!(kb.has_vector_index().await.unwrap(), "no ANN index over {n} chunks");
    // Each probe's own vector must come back first, with similarity ~1.
    let mut found = 0;
    for i in (0..n).step_by(n / 50) {
        let hits = kb.search_vector(&rows[i].1, 5).await.unwrap();
        assert!(hits.len() == 5);
        if hits[0].chunk.id == rows[i].0.id && hits[0].similarity.unwrap() > 0.99 {
            found += 1;
        }
    }
    assert!(found >= 48, "the index found only {found} of 50 exact matches");
}

#[test]
fn lore_closes_its_own_folders_and_names_a_data_dir_open_to_others() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    // Made by hand (or by an older version) with the usual umask: open to everyone.
    let (data, conversations) = (dir.path().join("data"), dir.path().join("data/conversations"));
    for folder in [&data, &conversations] {
        std::fs::create_dir_all(folder).unwrap();
        std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = std::process::Command::new(lore_tests::lore_binary())
        .args(["--config", &config.file.display().to_string(), "check"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&conversations), 0o700, "Lore's own folder is closed: {stderr}");
    assert_eq!(mode(&data), 0o755, "the configured folder is the owner's choice");
    assert!(stderr.contains("data_dir") && stderr.contains(&format!("chmod 700 {}", data.display())), "{stderr}");
}
