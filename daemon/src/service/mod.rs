//! Running the daemon: [`run`] (adapters supervised, the inbox, shutdown), [`http`]
//! (the OpenAI-compatible API, the chat and quality pages, health and metrics),
//! [`quality`] (what the quality page shows), [`watch`] (re-ingest when a source folder
//! changes).
//!
//! Floor 4: imports the wiring (`app`) and everything below it, never the tools.

pub mod http;
pub mod quality;
pub mod run;
pub mod watch;
