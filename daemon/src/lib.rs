//! Lore: turn your own text into a chat bot that answers questions about it.
//!
//! Where things happen:
//! - a message enters in [`router`] (adapters feed it; commands and allow-lists live there);
//! - passages are chosen in [`pipeline`] (a [`pipeline::Chain`] per bot and channel, built
//!   once from `lore-plugins`' retrievers and rerankers);
//! - tokens are generated in the `lore-engine` crate (the only one that knows llama.cpp).
//!
//! This crate is glue: it reads the config, builds the models, plugins and adapters, and
//! routes. It knows nothing of llama.cpp (that is `lore-engine`), LanceDB/Arrow
//! (`lore-plugins`) or serenity/teloxide (`lore-adapters`).

pub mod answer_text;
pub mod app;
pub mod bench;
pub mod calibrate;
pub mod cli;
pub mod confidence;
pub mod config;
pub mod eval;
pub mod evidence;
pub mod http;
pub mod ingest;
pub mod line;
pub mod memory;
pub mod metrics;
pub mod owner_only;
pub mod pipeline;
pub mod prompt;
pub mod router;
pub mod serve;
pub mod synth;
