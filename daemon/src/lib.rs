//! Lore: turn your own text into a chat bot that answers questions about it.
//!
//! Where things happen:
//! - a message enters in [`router`] (adapters feed it; commands and allow-lists live there);
//! - passages are chosen in [`pipeline`] (retrievers and rerankers from `lore-plugins`);
//! - tokens are generated in [`engine`] (the only module that knows llama.cpp).
//!
//! This crate is glue: it reads the config, builds plugins and adapters, and routes. It
//! knows nothing of LanceDB/Arrow (that is `lore-plugins`) or serenity/teloxide
//! (`lore-adapters`).

pub mod app;
pub mod bench;
pub mod cli;
pub mod config;
pub mod engine;
pub mod eval;
pub mod ingest;
pub mod memory;
pub mod pipeline;
pub mod prompt;
pub mod router;
