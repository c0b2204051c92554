//! Running the daemon: [`run`] (adapters supervised, the inbox, shutdown), [`http`]
//! (the OpenAI-compatible API, the chat page, health and metrics), [`watch`] (re-ingest
//! when a source folder changes).
//!
//! Floor 4: imports the wiring (`app`) and everything below it, never the tools.

pub mod http;
pub mod run;
pub mod watch;
