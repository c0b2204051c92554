//! The vocabulary every Lore crate shares, and nothing heavier.
//!
//! `lore-core` knows nothing of llama.cpp, LanceDB/Arrow, serenity/teloxide or the YAML
//! config: it holds plain data (chunks, hits, chat messages, generation events) and the
//! small traits the other crates implement (`Embedder`, `Retriever`, `Reranker`, `Scorer`,
//! `PairScorer`, `ChatModel`, `ReplySink`, `Adapter`), and deterministic stand-ins for
//! the models ([`testing`]) so every crate can test its logic without model files. The
//! engine, the knowledge bases (`lore-knowledge`), the remote engines and the adapters
//! each depend on this crate and never on each other.

pub mod chat;
pub mod generation;
pub mod knowledge;
pub mod retrieval;
mod secret;
pub mod testing;

pub use chat::{
    command_argument, parse_vote_button_data, vote_button_data, Adapter, Author, Command, Connected, ConversationKey,
    Incoming, Rating, ReplySink, SourceRef,
};
pub use generation::{
    ChatModel, Event, Finish, GenerateError, GenerateRequest, Generated, Generation, LoraAdapter, Part, PromptText,
    Sampling, StopReason,
};
pub use knowledge::{chunk_id, Chunk, Hit};
pub use retrieval::{cosine, Embedder, PairScorer, PluginContext, Reranker, Retriever, Scorer};
pub use secret::Secret;

/// What a caught panic said, when it said it with a string (for the log).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
