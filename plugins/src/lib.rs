//! Retrieval for Lore: the `Embedder`, `Retriever` and `Reranker` traits, the built-in
//! plugins, and the LanceDB knowledge-base store.
//!
//! This crate is the only one that knows LanceDB and Arrow. It knows nothing about
//! llama.cpp (embedders come in through the [`Embedder`] trait) or chat platforms.

pub mod embedder;
pub mod rerank;
pub mod retrieve;
pub mod store;

pub use embedder::Embedder;
pub use rerank::{PairScorer, PluginContext, Reranker, RerankerConfig, Scorer};
pub use retrieve::{Retriever, RetrieverConfig};
pub use store::{Chunk, Hit, KbStore, KnowledgeBase, StoreError, WriteSummary};
