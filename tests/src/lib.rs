//! Shared pieces of the integration tests: model and data locations, test configs, and the
//! fake Discord and Telegram servers.

pub mod capture;
pub mod models;
