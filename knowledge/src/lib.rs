//! Lore's knowledge bases: the LanceDB store, and the built-in retrievers and rerankers
//! that find passages in them.
//!
//! This crate is the only one that knows LanceDB and Arrow. It knows nothing about
//! llama.cpp (models come in through `lore-core`'s `Embedder`, `Scorer` and `PairScorer`
//! traits), chat platforms or the YAML config file.

pub mod contract;
pub mod hebrew;
pub mod language;
pub mod questions;
pub mod records;
pub mod rerank;
pub mod retrieve;
pub mod store;

pub use language::{Language, LanguageChoice};
pub use lore_core::{Chunk, Embedder, Hit, PairScorer, PluginContext, Reranker, Retriever, Scorer};
pub use questions::{ChunkQuestions, Questions};
pub use records::{Record, Records};
pub use rerank::RerankerConfig;
pub use retrieve::RetrieverConfig;
pub use store::{ChunkPlace, KbHandle, KbStore, KnowledgeBase, StoreError, WriteSummary};
