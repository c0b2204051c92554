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
    /// A Discord bot in a lore built without the `discord` feature: refused by name.
    #[cfg(not(feature = "discord"))]
    Discord(NotBuilt),
    /// A Telegram bot in a lore built without the `telegram` feature: refused by name.
    #[cfg(not(feature = "telegram"))]
    Telegram(NotBuilt),
}

/// The keys of a part this binary was built without, read and set aside so the config
/// check can name the cargo feature instead of calling the `type` unknown.
#[derive(Debug, Clone)]
pub struct NotBuilt;

impl<'de> Deserialize<'de> for NotBuilt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| NotBuilt)
    }
}

impl AdapterConfig {
    /// The cargo feature this adapter needs and this binary lacks, if any.
    pub fn missing_feature(&self) -> Option<&'static str> {
        match self {
            #[cfg(not(feature = "discord"))]
            Self::Discord(NotBuilt) => Some("discord"),
            #[cfg(not(feature = "telegram"))]
            Self::Telegram(NotBuilt) => Some("telegram"),
            _ => None,
        }
    }
}
