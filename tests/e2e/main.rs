//! The one integration-test binary (heavy crates link once).

mod answering;
mod bots;
mod config_errors;
mod discord;
mod documents;
mod engine;
mod generated_questions;
mod hostile;
mod hostile_http;
mod http_api;
mod interrupted;
mod knowledge_base;
mod live;
mod load;
mod logs;
mod lora;
mod plugins;
mod remote;
mod shared_store;
mod soak;
mod supervision;
mod synth;
mod telegram;
mod text_to_text;
mod trust;
mod web_pages;
