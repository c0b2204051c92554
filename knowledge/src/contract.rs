//! The contract every retriever and reranker keeps: results ordered best first, at most k
//! of them, no duplicates, an empty knowledge base gives nothing (not an error), empty,
//! huge or non-ASCII questions are answered, and rerankers only reorder or filter what
//! they were given. Checked here on the built-ins with deterministic stand-in models, and
//! by the end-to-end tests with the real ones; a plugin of your own can be checked the
//! same way.

use std::collections::HashSet;

use crate::{Hit, Reranker, RerankerConfig, Retriever};

/// Seven paragraphs in three scripts, one chunk each.
pub const CORPUS: &str = "\
Honey bees live in colonies of up to sixty thousand workers and one queen.

Workers collect nectar and pollen from flowers and turn the nectar into honey.

Les abeilles mellifères vivent en colonies ; la reine pond jusqu'à deux mille œufs par jour.

ミツバチは花の蜜を集めて蜂蜜を作ります。巣は六角形の部屋でできています。

Drones are male bees whose only task is to mate with a queen from another colony.

Beekeepers smoke the hive before opening it, which calms the bees.

Varroa mites are the most damaging parasite of honey bee colonies worldwide.
";

/// Questions every plugin must handle, by label.
pub fn questions() -> Vec<(&'static str, String)> {
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

/// Checks a retriever over [`CORPUS`] (`stored` chunks) and the same retriever over an
/// empty knowledge base. `dense`: it ranks every chunk, so `k` is met exactly.
pub async fn check_retriever(
    name: &str,
    retriever: &dyn Retriever,
    on_empty: &dyn Retriever,
    stored: usize,
    dense: bool,
) {
    for (label, q) in questions() {
        for k in [1, 3, 50] {
            let what = format!("{name}, {label} question, k={k}");
            let hits = retriever.retrieve(&q, k).await.unwrap_or_else(|e| panic!("{what}: {e:#}"));
            assert!(hits.len() <= k, "{what}: {} hits", hits.len());
            assert_no_duplicates(&what, &hits);
            assert_best_first(&what, &hits);
            assert!(hits.iter().all(|h| h.similarity.is_some()), "{what}: a hit without its cosine similarity");
            let none = on_empty.retrieve(&q, k).await.unwrap_or_else(|e| panic!("{what}, empty kb: {e:#}"));
            assert!(none.is_empty(), "{what}: an empty knowledge base returned {}", none.len());
        }
    }
    // A question with words in the text finds it, whatever the script.
    for (q, needle) in [("What do workers collect from flowers?", "nectar"), ("abeilles reine œufs", "abeilles")] {
        let hits = retriever.retrieve(q, 3).await.unwrap();
        assert!(hits.iter().any(|h| h.chunk.text.contains(needle)), "{name}: {q:?} did not find {needle:?}");
    }
    if dense {
        assert_eq!(retriever.retrieve("bees", 3).await.unwrap().len(), 3, "{name}: k=3");
        assert_eq!(retriever.retrieve("bees", 50).await.unwrap().len(), stored, "{name}: k=50");
    }
}

/// Checks a reranker on what `source` (a dense retriever over [`CORPUS`]) finds.
pub async fn check_reranker(config: &RerankerConfig, reranker: &dyn Reranker, source: &dyn Retriever) {
    let name = config.name();
    assert!(reranker.rerank("anything", vec![]).await.unwrap().is_empty(), "{name}: hits from nothing");
    for (label, q) in questions() {
        let what = format!("{name}, {label} question");
        let input = source.retrieve(&q, 6).await.unwrap();
        if !q.trim().is_empty() {
            assert_eq!(input.len(), 6, "{what}: the retriever found too little to rerank");
        }
        let output = reranker.rerank(&q, input.clone()).await.unwrap_or_else(|e| panic!("{what}: {e:#}"));
        assert_no_duplicates(&what, &output);
        let known: HashSet<String> = ids(&input).into_iter().collect();
        assert!(ids(&output).iter().all(|id| known.contains(id)), "{what}: invented a chunk");
        match config {
            RerankerConfig::Threshold { min_score } => {
                let kept: Vec<String> = input
                    .iter()
                    .filter(|h| h.similarity.is_some_and(|s| s >= *min_score))
                    .map(|h| h.chunk.id.clone())
                    .collect();
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

/// Every built-in reranker, with small candidate counts.
pub fn all_rerankers() -> [RerankerConfig; 4] {
    [
        RerankerConfig::Threshold { min_score: 0.2 },
        RerankerConfig::Mmr { lambda: 0.7 },
        RerankerConfig::Llm { candidates: 4 },
        RerankerConfig::CrossEncoder { candidates: 4 },
    ]
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lore_core::testing::{HashEmbedder, OverlapScorer};
    use lore_core::{Chunk, PluginContext};

    use super::*;
    use crate::{KbHandle, KbStore, RetrieverConfig};

    /// The corpus stored with stand-in vectors, one chunk per paragraph, plus an empty base.
    async fn store(dir: &std::path::Path, embedder: &HashEmbedder) -> (KbHandle, KbHandle, usize) {
        let store = KbStore::open(dir).await.unwrap();
        let kb = store.open_or_create("bees", embedder.dim).await.unwrap();
        let rows: Vec<(Chunk, Vec<f32>)> = CORPUS
            .split("\n\n")
            .enumerate()
            .map(|(i, p)| {
                (
                    Chunk::new("bees.md", i as u32, 2 * i as u32 + 1, 2 * i as u32 + 1, p.trim().into()),
                    embedder.vector(p),
                )
            })
            .collect();
        kb.replace_sources(&rows, &["bees.md".to_string()]).await.unwrap();
        store.open_or_create("nothing", embedder.dim).await.unwrap();
        (KbHandle::new(store.clone(), "bees").unwrap(), KbHandle::new(store, "nothing").unwrap(), rows.len())
    }

    #[tokio::test]
    async fn every_retriever_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let embedder = HashEmbedder::default();
        let (kb, empty, stored) = store(dir.path(), &embedder).await;
        for config in [RetrieverConfig::Vector, RetrieverConfig::Fulltext, RetrieverConfig::default()] {
            let r = config.build(kb.clone(), Arc::new(embedder.clone()));
            let none = config.build(empty.clone(), Arc::new(embedder.clone()));
            check_retriever(config.name(), r.as_ref(), none.as_ref(), stored, config != RetrieverConfig::Fulltext)
                .await;
        }
    }

    #[tokio::test]
    async fn every_reranker_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let embedder = HashEmbedder::default();
        let (kb, _, _) = store(dir.path(), &embedder).await;
        let cx = PluginContext {
            embedder: Arc::new(embedder.clone()),
            scorer: Some(Arc::new(OverlapScorer)),
            cross_encoder: Some(Arc::new(OverlapScorer)),
        };
        let source = RetrieverConfig::Vector.build(kb, cx.embedder.clone());
        for config in all_rerankers() {
            check_reranker(&config, config.build(&cx).unwrap().as_ref(), source.as_ref()).await;
        }
    }

    #[tokio::test]
    async fn a_knowledge_base_never_ingested_is_reported_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = KbStore::open(dir.path()).await.unwrap();
        let r =
            RetrieverConfig::Vector.build(KbHandle::new(store, "later").unwrap(), Arc::new(HashEmbedder::default()));
        let err = r.retrieve("anything", 3).await.unwrap_err().to_string();
        assert!(err.contains("\"later\" is empty") && err.contains("lore ingest --kb later"), "{err}");
    }
}
