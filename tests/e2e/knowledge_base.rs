//! Ingest: chunk ids are stable, unchanged files write nothing, changes replace, removals
//! delete, bad input is reported before anything is written.

use std::path::Path;

use lore::app::{App, Models};
use lore::ingest::{ingest, Progress::Quiet};
use lore_tests::models::config;

async fn app(dir: &Path) -> App {
    App::load(config(dir, ""), Models::WithoutGenerator).await.unwrap()
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
    write(&docs.join("ignored.pdf"), "not text");
    let app = app(dir.path()).await;
    let kb = app.kb_for_ingest("fruit").await.unwrap();
    let chunking = app.config.chunking.clone();

    let first = ingest(&kb, &app.embedder, std::slice::from_ref(&docs), &chunking, Quiet).await.unwrap();
    assert_eq!((first.files, first.changed_files), (2, 2));
    let stored = kb.count().await.unwrap();
    assert_eq!(first.chunks_added, stored);
    let version = kb.version().await.unwrap();

    let again = ingest(&kb, &app.embedder, std::slice::from_ref(&docs), &chunking, Quiet).await.unwrap();
    assert_eq!((again.unchanged_files, again.changed_files, again.chunks_embedded), (2, 0, 0), "{again}");
    assert_eq!(kb.version().await.unwrap(), version, "an unchanged re-ingest wrote a new version");

    write(&docs.join("b.txt"), "Bananas grow in the tropics, on large herbs.\n");
    std::fs::remove_file(docs.join("a.md")).unwrap();
    let changed = ingest(&kb, &app.embedder, std::slice::from_ref(&docs), &chunking, Quiet).await.unwrap();
    assert_eq!((changed.changed_files, changed.removed_files), (1, 1), "{changed}");
    let chunks = kb.all_chunks().await.unwrap();
    assert_eq!(chunks.len(), 1);
    assert!(chunks[0].text.contains("large herbs"));
    assert!(chunks[0].source.ends_with("b.txt"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_reported_with_its_place_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    write(&docs.join("good.txt"), "Fine text.\n");
    std::fs::write(docs.join("bad.txt"), b"line one\nline two \xff\xfe broken\n").unwrap();
    let app = app(dir.path()).await;
    let kb = app.kb_for_ingest("mixed").await.unwrap();
    let err = ingest(&kb, &app.embedder, std::slice::from_ref(&docs), &app.config.chunking, Quiet)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.txt:2") && err.contains("not valid UTF-8"), "{err}");
    assert_eq!(kb.count().await.unwrap(), 0);

    let pdf = docs.join("paper.pdf");
    write(&pdf, "%PDF");
    let err = ingest(&kb, &app.embedder, &[pdf], &app.config.chunking, Quiet).await.unwrap_err().to_string();
    assert!(err.contains("paper.pdf") && err.contains("cannot ingest this file type"), "{err}");

    let err = ingest(&kb, &app.embedder, &[dir.path().join("nope")], &app.config.chunking, Quiet)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_knowledge_base_searches_through_an_ann_index_and_still_finds_exact_matches() {
    use lore_core::Chunk;
    use lore_plugins::store::VECTOR_INDEX_MIN_ROWS;
    use lore_plugins::KbStore;
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
