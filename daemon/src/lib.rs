//! Lore: turn your own text into a chat bot that answers questions about it.
//!
//! Where things happen:
//! - a message enters in [`question::router`] (adapters feed it; commands and allow-lists
//!   live there), waits its turn in [`question::line`];
//! - passages are chosen, the prompt built and the answer judged in
//!   [`question::pipeline`] (a `Chain` per bot and channel, built once from
//!   `lore-knowledge`' retrievers and rerankers);
//! - tokens are generated in the `lore-engine` crate (the only one that knows llama.cpp)
//!   or on remote servers (`lore-remote`).
//!
//! The modules are floors; each imports only from floors below it (`scripts/check-layers`
//! fails the tests otherwise):
//! 0. [`config`], [`calendar`], [`logs`], [`metrics`], [`owner_only`]: the YAML file, days
//!    as people write them, how log lines are written (text or JSON), counters, folder
//!    modes.
//! 1. [`question`]: the path one question takes.
//! 2. [`ingest`]: files and web pages into a knowledge base.
//! 3. [`app`]: the wiring: models loaded, the store opened, the answerer built.
//! 4. [`service`]: running the daemon (adapters supervised, the HTTP API, watching).
//! 5. [`tools`]: eval, gold, calibrate, synth, bench; never imported by the floors below.
//! 6. [`cli`]: the command line.
//!
//! This crate knows nothing of llama.cpp (that is `lore-engine`), LanceDB/Arrow
//! (`lore-knowledge`) or serenity/teloxide (`lore-adapters`).

pub mod calendar;
pub mod config;
pub mod logs;
pub mod metrics;
pub mod owner_only;

pub mod question;

pub mod ingest;

pub mod app;

pub mod service;

pub mod tools;

pub mod cli;
