//! `generated_questions: N` on the real default generator: questions written at ingest
//! lead retrieval to their chunk, unchanged chunks keep theirs, a changed chunk's go with
//! it, and N = 0 drops them. A bad N is refused with its key.

use std::path::Path;

use lore::app::{App, Load};
use lore::config::Config;
use lore::ingest::{ingest, Progress::Quiet, Settings};
use lore_knowledge::RetrieverConfig;
use lore_tests::models::config;

#[tokio::test(flavor = "multi_thread")]
async fn generated_questions_lead_to_their_chunk_and_follow_the_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/sample/honeybees.md");
    std::fs::copy(&sample, docs.join("honeybees.md")).unwrap();
    let otters = docs.join("otters.md");
    std::fs::write(&otters, "Sea otters hold hands while they sleep so that they do not drift apart.\n").unwrap();
    let extra = format!("knowledge_bases:\n  kb:\n    sources: [{}]\n    generated_questions: 2\n", docs.display());
    let app = App::load(config(dir.path(), &extra), Load::All).await.unwrap();
    let settings = Settings::for_kb(&app.config, "kb");
    assert_eq!(settings.generated_questions, 2);
    let kb = app.kb_for_ingest("kb").await.unwrap();
    let roots = std::slice::from_ref(&docs);
    ingest(&kb, app.embedder.as_ref(), roots, &settings, Quiet).await.unwrap();
    let chunks = kb.all_chunks().await.unwrap();

    let first = app.refresh_questions(&kb, 2, Quiet).await.unwrap();
    assert_eq!(first.chunks_asked, chunks.len(), "{first}");
    let stored = kb.questions().all().await.unwrap();
    assert_eq!(stored.len(), first.questions);
    // The 135M default writes few questions that name things of their passage.
    assert!(!stored.is_empty(), "{first}");
    assert!(stored.iter().all(|(id, q)| chunks.iter().any(|c| c.id == *id) && q.ends_with('?')), "{stored:?}");

    // A generated question leads the vector retriever to its chunk.
    let retriever = RetrieverConfig::Vector.build(app.kb("kb").unwrap(), app.embedder.clone());
    for (chunk_id, question) in stored.iter().take(3) {
        let hits = retriever.retrieve(question, 3).await.unwrap();
        assert!(hits.iter().any(|h| h.chunk.id == *chunk_id), "{question}");
    }

    // Unchanged chunks keep their questions, and one the model wrote none for is not
    // asked again.
    let again = app.refresh_questions(&kb, 2, Quiet).await.unwrap();
    assert_eq!(again.chunks_asked, 0, "{again}");

    // The otters file changes: its old chunk's questions go, only the new chunk is asked.
    let old_otter = chunks.iter().find(|c| c.source.ends_with("otters.md")).unwrap().id.clone();
    std::fs::write(&otters, "Sea otters keep a favourite stone in a pouch of loose skin under each forearm.\n")
        .unwrap();
    ingest(&kb, app.embedder.as_ref(), roots, &settings, Quiet).await.unwrap();
    assert!(kb.questions().stored().await.unwrap().keys().all(|id| *id != old_otter));
    let changed = app.refresh_questions(&kb, 2, Quiet).await.unwrap();
    assert_eq!(changed.chunks_asked, 1, "{changed}");
    // Asking for more questions asks every chunk again.
    let more = app.refresh_questions(&kb, 3, Quiet).await.unwrap();
    assert_eq!(more.chunks_asked, chunks.len(), "{more}");

    let dropped = app.refresh_questions(&kb, 0, Quiet).await.unwrap();
    assert!(dropped.dropped);
    assert!(kb.questions().all().await.unwrap().is_empty());
    assert_eq!(retriever.retrieve("Where do otters keep stones?", 1).await.unwrap().len(), 1);
}

#[test]
fn too_many_generated_questions_are_refused_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lore.yaml");
    let body = "models:\n  generator:\n    path: /m/g.gguf\n  embedder:\n    path: /m/e.gguf\nknowledge_bases:\n  docs:\n    generated_questions: 50\n";
    std::fs::write(&file, body).unwrap();
    let err = format!("{:#}", Config::load(&file).unwrap_err());
    assert!(err.contains("knowledge_bases.docs.generated_questions") && err.contains("at most 20"), "{err}");
}
