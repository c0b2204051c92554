//! Chat platforms in, streamed answers out.
//!
//! This crate is the only one that knows serenity (Discord) or teloxide (Telegram).
//! Nothing platform-specific crosses its API: the daemon sees [`Incoming`] messages and
//! answers through a [`ReplySink`]. It knows nothing about models, retrieval or LanceDB.

pub mod console;
#[cfg(feature = "discord")]
pub mod discord;
#[cfg(feature = "telegram")]
pub mod telegram;
pub mod text;

// The chat types live in lore-core (the daemon and the adapters share them); they are
// re-exported here so platform code names them as its own.
pub use lore_core::chat::{Adapter, Author, Command, ConversationKey, Incoming, ReplySink, SourceRef};
