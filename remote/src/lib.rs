//! Models on OpenAI-compatible servers: the way to run models llama.cpp has no graph for
//! (GPT-J, GPT-Neo, LongT5 under vLLM or TGI), and the way a community outgrows one
//! machine (a pool of GPU servers shared by several daemons).
//!
//! - [`RemoteGenerator`] implements [`lore_core::ChatModel`] over streamed completions
//!   (`generate.rs`) and [`lore_core::Scorer`] over prompt log-probabilities (`score.rs`).
//! - [`RemoteEmbedder`] implements [`lore_core::Embedder`] over `/embeddings`, batched
//!   (`embed.rs`).
//! - Both share the pool (`pool.rs`): least-in-flight balancing, per-server limits,
//!   failover, health checks, an overall deadline per request and capped answer bodies;
//!   and token counting (`tokens.rs`): a tokenizer file, the server's `/tokenize`, or an
//!   estimate.
//! - What people and documents wrote never reaches a server as control tokens
//!   (`special.rs`), and a stream is bounded (`sse.rs`, `max_tokens` in `generate.rs`).
//! - Failures are a [`RemoteError`] (`error.rs`), whose variant says what to do: fix the
//!   config, change the request, or wait for the servers. Where a `lore_core` trait fixes
//!   the error type it converts: `anyhow` for `Embedder` and `Scorer`, the text of an
//!   `Event::Failed` for a generation.
//!
//! This crate knows HTTP and OpenAI's wire format; nothing of llama.cpp, LanceDB or chat
//! platforms.

mod chat;
mod embed;
mod error;
#[cfg(test)]
mod fake;
mod generate;
mod pool;
mod score;
mod special;
mod sse;
mod tokens;

pub use embed::{RemoteEmbedder, RemoteEmbedderSettings};
pub use error::{RemoteError, ServerFailure};
pub use generate::{RemoteGenerator, RemoteGeneratorSettings, RETRY_NOTE};
pub use pool::{EndpointState, PoolSettings};
pub use score::NO_PROMPT_LOGPROBS;
pub use tokens::CountedBy;
