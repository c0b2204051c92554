//! The contract every retriever and reranker keeps, checked on each built-in with the real
//! models: results ordered best first, at most k of them, no duplicates, an empty knowledge
//! base gives nothing (not an error), and empty, huge or non-ASCII questions are answered.
//! Also the cross-encoder itself: the pair layout and scores that do not depend on batching.

use std::collections::HashSet;
use std::path::Path;

use lore::app::App;
use lore::config::EmbedderConfig;
use lore::engine::LlamaCrossEncoder;
use lore::ingest::ingest;
use lore_plugins::{Hit, KnowledgeBase, PairScorer, PluginContext, RerankerConfig, RetrieverConfig};
use lore_tests::models::{config_with_models, embedder_path, reranker_path};

const CORPUS: &str = "\
Honey bees live in colonies of up to sixty thousand workers and one queen.

Workers collect nectar and pollen from flowers and turn the nectar into honey.

Les abeilles mellifères vivent en colonies ; la reine pond jusqu'à deux mille œufs par jour.

ミツバチは花の蜜を集めて蜂蜜を作ります。巣は六角形の部屋でできています。

Drones are male bees whose only task is to mate with a queen from another colony.

Beekeepers smoke the hive before opening it, which calms the bees.

Varroa mites are the most damaging parasite of honey bee colonies worldwide.
";

fn questions() -> Vec<(&'static str, String)> {
    vec![
        ("plain", "What do workers collect from flowers?".to_string()),
        ("empty", String::new()),
        ("blank", "   \n ".to_string()),
        ("huge", "Why do beekeepers smoke the hive? ".repeat(3000)),
        ("french", "Combien d'œufs la reine pond-elle ?".to_string()),
        ("japanese", "ミツバチは何を集めますか？".to_string()),
        ("emoji", "🐝 honey 🍯?".to_string()),
    ]
}

async fn setup(dir: &Path) -> (App, KnowledgeBase, KnowledgeBase) {
    let models = format!("  reranker:\n    path: {}\n", reranker_path().display());
    let app = App::load(config_with_models(dir, &models, ""), true).await.unwrap();
    std::fs::write(dir.join("bees.md"), CORPUS).unwrap();
    let kb = app.kb("bees", true).await.unwrap();
    let chunking = lore::config::Chunking { max_tokens: 48, overlap_tokens: 0, unit: lore::config::ChunkUnit::Sentence };
    ingest(&kb, &app.embedder, &[dir.join("bees.md")], &chunking, false).await.unwrap();
    let empty = app.kb("nothing", true).await.unwrap();
    (app, kb, empty)
}

fn ids(hits: &[Hit]) -> Vec<String> {
    hits.iter().map(|h| h.chunk.id.clone()).collect()
}

fn assert_no_duplicates(what: &str, hits: &[Hit]) {
    let unique: HashSet<String> = ids(hits).into_iter().collect();
    assert_eq!(unique.len(), hits.len(), "{what}: duplicate chunks in {:?}", ids(hits));
}

fn assert_best_first(what: &str, hits: &[Hit]) {
    for w in hits.windows(2) {
        assert!(w[0].score >= w[1].score, "{what}: not best first: {} before {}", w[0].score, w[1].score);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_retriever_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let (app, kb, empty) = setup(dir.path()).await;
    let stored = kb.count().await.unwrap();
    assert!(stored >= 6, "the corpus should make several chunks, got {stored}");
    let cx = app.plugin_context();
    for config in [RetrieverConfig::Vector, RetrieverConfig::Fulltext, RetrieverConfig::default()] {
        let name = config.name();
        let retriever = config.build(cx.embedder.clone());
        for (label, q) in questions() {
            for k in [1, 3, 50] {
                let what = format!("{name}, {label} question, k={k}");
                let hits = retriever.retrieve(&kb, &q, k).await.unwrap_or_else(|e| panic!("{what}: {e:#}"));
                assert!(hits.len() <= k, "{what}: {} hits", hits.len());
                assert_no_duplicates(&what, &hits);
                assert_best_first(&what, &hits);
                let none = retriever.retrieve(&empty, &q, k).await.unwrap_or_else(|e| panic!("{what}, empty kb: {e:#}"));
                assert!(none.is_empty(), "{what}: an empty knowledge base returned {}", none.len());
            }
        }
        // A question with words in the text finds it, whatever the script.
        for (q, needle) in [("What do workers collect from flowers?", "nectar"), ("abeilles reine œufs", "abeilles")] {
            let hits = retriever.retrieve(&kb, q, 3).await.unwrap();
            assert!(hits.iter().any(|h| h.chunk.text.contains(needle)), "{name}: {q:?} did not find {needle:?}");
        }
        if !matches!(config, RetrieverConfig::Fulltext) {
            // Dense search ranks every chunk, so k is met exactly.
            assert_eq!(retriever.retrieve(&kb, "bees", 3).await.unwrap().len(), 3, "{name}: k=3");
            assert_eq!(retriever.retrieve(&kb, "bees", 50).await.unwrap().len(), stored, "{name}: k=50");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_reranker_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let (app, kb, _) = setup(dir.path()).await;
    let cx: PluginContext = app.plugin_context();
    let rerankers = [
        RerankerConfig::Threshold { min_score: 0.2 },
        RerankerConfig::Mmr { lambda: 0.7 },
        RerankerConfig::Llm { candidates: 4 },
        RerankerConfig::CrossEncoder { candidates: 4 },
    ];
    let vector = RetrieverConfig::Vector.build(cx.embedder.clone());
    for config in &rerankers {
        let name = config.name();
        let reranker = config.build(&cx).unwrap();
        assert!(reranker.rerank("anything", vec![]).await.unwrap().is_empty(), "{name}: hits from nothing");
        for (label, q) in questions() {
            let what = format!("{name}, {label} question");
            let input = vector.retrieve(&kb, &q, 6).await.unwrap();
            if !q.trim().is_empty() {
                assert_eq!(input.len(), 6, "{what}: the vector retriever found too little to rerank");
            }
            let output = reranker.rerank(&q, input.clone()).await.unwrap_or_else(|e| panic!("{what}: {e:#}"));
            assert_no_duplicates(&what, &output);
            let known: HashSet<String> = ids(&input).into_iter().collect();
            assert!(ids(&output).iter().all(|id| known.contains(id)), "{what}: invented a chunk");
            match config {
                RerankerConfig::Threshold { min_score } => {
                    let kept: Vec<String> =
                        input.iter().filter(|h| h.similarity.unwrap_or(h.score) >= *min_score).map(|h| h.chunk.id.clone()).collect();
                    assert_eq!(ids(&output), kept, "{what}: keeps exactly the hits above the threshold, in order");
                }
                RerankerConfig::Mmr { .. } => {
                    assert_eq!(output.len(), input.len(), "{what}: dropped hits");
                    if !q.trim().is_empty() {
                        assert_eq!(output[0].chunk.id, input[0].chunk.id, "{what}: the most relevant hit comes first");
                    }
                }
                RerankerConfig::Llm { candidates } | RerankerConfig::CrossEncoder { candidates } => {
                    assert_eq!(output.len(), input.len(), "{what}: dropped hits");
                    let n = (*candidates).min(input.len());
                    if !q.trim().is_empty() {
                        assert_best_first(&what, &output[..n]);
                    }
                    assert_eq!(ids(&output[n..]), ids(&input[n..]), "{what}: the rest keep their order");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cross_encoder_reads_pairs_and_scores_them_independently_of_batching() {
    let cfg: EmbedderConfig = serde_yaml::from_str(&format!("path: {}", reranker_path().display())).unwrap();
    let ce = LlamaCrossEncoder::load(&cfg).unwrap();
    // [CLS] question [SEP] passage [SEP], as the BERT cross-encoders were trained.
    let ids = ce.pair_token_ids("who", "the queen");
    assert_eq!(ids.first(), Some(&2), "{ids:?}");
    assert_eq!(ids.last(), Some(&3), "{ids:?}");
    assert_eq!(ids.iter().filter(|&&t| t == 3).count(), 2, "{ids:?}");
    let sep = ids.iter().position(|&t| t == 3).unwrap();
    assert_eq!(ce.pair_token_ids("who", "").len(), sep + 2, "the passage follows the first [SEP]");
    // A passage longer than the context is cut; the pair still fits.
    assert!(ce.pair_token_ids("who", &"honey ".repeat(5000)).len() <= 512);

    let passages: Vec<String> = ["the queen lays eggs", "workers collect nectar", "drones mate", "smoke calms the hive"]
        .map(String::from)
        .to_vec();
    let together = ce.score_pairs("who lays eggs", &passages).await.unwrap();
    assert_eq!(together.len(), passages.len());
    let alone: Vec<f32> = futures::future::join_all(passages.iter().map(|p| ce.score_pairs("who lays eggs", std::slice::from_ref(p))))
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
    let cfg: EmbedderConfig = serde_yaml::from_str(&format!("path: {}", embedder_path().display())).unwrap();
    let err = LlamaCrossEncoder::load(&cfg).err().expect("an embedder loaded as a reranker").to_string();
    assert!(err.contains("not a reranking model") && err.contains("all-MiniLM"), "{err}");
}
