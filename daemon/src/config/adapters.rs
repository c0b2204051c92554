//! A bot's `adapter:`: the platform it talks on, tagged by `type`.

use serde::Deserialize;

/// Where a bot talks (`bots.NAME.adapter`): `type: console`, `discord` or `telegram`, with
/// the platform's own keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum AdapterConfig {
    /// Standard input and output (`lore chat`, or `lore run` in a terminal).
    #[default]
    Console,
    /// A Discord bot (token from the environment variable `token_env`).
    #[cfg(feature = "discord")]
    Discord(lore_adapters::discord::DiscordConfig),
    /// A Telegram bot (token from the environment variable `token_env`).
    #[cfg(feature = "telegram")]
    Telegram(lore_adapters::telegram::TelegramConfig),
}
