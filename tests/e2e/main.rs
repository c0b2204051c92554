//! The one integration-test binary (heavy crates link once).

mod answering;
mod config_errors;
mod engine;
mod knowledge_base;
