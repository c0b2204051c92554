//! The contract every retriever and reranker keeps, checked on each built-in with the real
//! models: results ordered best first, at most k of them, no duplicates, an empty knowledge
//! base gives nothing (not an error), and empty, huge or non-ASCII questions are answered.
//! Also the cross-encoder itself: the pair layout and scores that do not depend on batching.

use std::path::Path;
use std::sync::Arc;

use lore::app::{App, Load};
use lore::ingest::{ingest, Progress, Settings};
use lore_core::PairScorer;
use lore_engine::{EmbedderConfig, LlamaCrossEncoder};
use lore_knowledge::contract::{all_rerankers, check_reranker, check_retriever, CORPUS};
use lore_knowledge::{KbHandle, RetrieverConfig};
use lore_tests::models::{config_with_models, embedder_path, reranker_path};

/// The real models, the contract corpus ingested as the bots would (sentence chunks), and
/// an empty knowledge base.
async fn setup(dir: &Path) -> (App, KbHandle, KbHandle, usize) {
    let models = format!("  reranker:\n    path: {}\n", reranker_path().display());
    let app = App::load(config_with_models(dir, &models, ""), Load::All).await.unwrap();
    std::fs::write(dir.join("bees.md"), CORPUS).unwrap();
    let kb = app.kb_for_ingest("bees").await.unwrap();
    let chunking =
        lore::config::Chunking { max_tokens: 48, overlap_tokens: 0, unit: lore::config::ChunkUnit::Sentence };
    ingest(&kb, app.embedder.as_ref(), &[dir.join("bees.md")], &Settings::new(&chunking), Progress::Quiet)
        .await
        .unwrap();
    let stored = kb.count().await.unwrap();
    assert!(stored >= 6, "the corpus should make several chunks, got {stored}");
    app.kb_for_ingest("nothing").await.unwrap();
    let (bees, nothing) = (app.kb("bees").unwrap(), app.kb("nothing").unwrap());
    (app, bees, nothing, stored)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_retriever_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let (app, kb, empty, stored) = setup(dir.path()).await;
    let embedder: Arc<dyn lore_core::Embedder> = app.embedder.clone();
    for config in [RetrieverConfig::Vector, RetrieverConfig::Fulltext, RetrieverConfig::default()] {
        let retriever = config.build(kb.clone(), embedder.clone());
        let on_empty = config.build(empty.clone(), embedder.clone());
        let dense = config != RetrieverConfig::Fulltext;
        check_retriever(config.name(), retriever.as_ref(), on_empty.as_ref(), stored, dense).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_reranker_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let (app, kb, _, _) = setup(dir.path()).await;
    let cx = app.plugin_context();
    let vector = RetrieverConfig::Vector.build(kb, cx.embedder.clone());
    for config in all_rerankers() {
        check_reranker(&config, config.build(&cx).unwrap().as_ref(), vector.as_ref()).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cross_encoder_reads_pairs_and_scores_them_independently_of_batching() {
    let ce = LlamaCrossEncoder::load(&EmbedderConfig::new(reranker_path())).unwrap();
    // [CLS] question [SEP] passage [SEP], as the BERT cross-encoders were trained.
    let ids = ce.pair_token_ids("who", "the queen");
    assert_eq!(ids.first(), Some(&2), "{ids:?}");
    assert_eq!(ids.last(), Some(&3), "{ids:?}");
    assert_eq!(ids.iter().filter(|&&t| t == 3).count(), 2, "{ids:?}");
    let sep = ids.iter().position(|&t| t == 3).unwrap();
    assert_eq!(ce.pair_token_ids("who", "").len(), sep + 2, "the passage follows the first [SEP]");
    // A passage longer than the context is cut; the pair still fits.
    assert!(ce.pair_token_ids("who", &"honey ".repeat(5000)).len() <= 512);

    let passages: Vec<String> =
        ["the queen lays eggs", "workers collect nectar", "drones mate", "smoke calms the hive"]
            .map(String::from)
            .to_vec();
    let together = ce.score_pairs("who lays eggs", &passages).await.unwrap();
    assert_eq!(together.len(), passages.len());
    let alone: Vec<f32> =
        futures::future::join_all(passages.iter().map(|p| ce.score_pairs("who lays eggs", std::slice::from_ref(p))))
            .await
            .into_iter()
            .map(|s| s.unwrap()[0])
            .collect();
    // Scores spread over a useful range, and a pair's score does not depend on its
    // neighbours in the batch beyond rounding (llama.cpp attends in F16).
    let spread = together.iter().cloned().fold(f32::MIN, f32::max) - together.iter().cloned().fold(f32::MAX, f32::min);
    assert!(spread > 0.05, "the pairs scored alike: {together:?}");
    for ((p, t), a) in passages.iter().zip(&together).zip(&alone) {
        assert!(t.is_finite() && (t - a).abs() < spread / 20.0, "{p:?}: {t} in a batch, {a} alone (spread {spread})");
    }

    // An embedding model is not a reranker: said in words, before anything is scored.
    let err = LlamaCrossEncoder::load(&EmbedderConfig::new(embedder_path()))
        .err()
        .expect("an embedder loaded as a reranker")
        .to_string();
    assert!(err.contains("not a reranking model") && err.contains("all-MiniLM"), "{err}");
}
