//! The one integration-test binary (heavy crates link once).

mod answering;
mod bots;
mod config_errors;
mod discord;
mod documents;
mod engine;
mod http_api;
mod interrupted;
mod knowledge_base;
mod live;
mod load;
mod plugins;
mod remote;
mod shared_store;
mod soak;
mod supervision;
mod synth;
mod telegram;
mod web_pages;
