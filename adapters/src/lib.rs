//! Chat platforms in, streamed answers out.
//!
//! This crate is the only one that knows serenity (Discord) or teloxide (Telegram).
//! Nothing platform-specific crosses its API: the daemon sees [`Incoming`] messages and
//! answers through a [`ReplySink`]. It knows nothing about models, retrieval or LanceDB.

#[cfg(any(feature = "discord", feature = "telegram"))]
mod bidi;
pub mod console;
#[cfg(feature = "discord")]
pub mod discord;
#[cfg(any(feature = "discord", feature = "telegram"))]
mod stream;
#[cfg(feature = "telegram")]
pub mod telegram;
pub mod text;
#[cfg(any(feature = "discord", feature = "telegram"))]
mod throttle;

// The chat types live in lore-core (the daemon and the adapters share them); they are
// re-exported here so platform code names them as its own.
pub use lore_core::chat::{Adapter, Author, Command, Connected, ConversationKey, Incoming, ReplySink, SourceRef};

#[cfg(all(test, feature = "discord", feature = "telegram"))]
mod tests {
    use crate::discord::DiscordAdapter;
    use crate::telegram::TelegramAdapter;

    /// Adapters are logged with `Debug`: a token printed there is a token leaked.
    #[test]
    fn adapters_do_not_print_their_token() {
        let discord = DiscordAdapter::new("b", &serde_json::from_str("{}").unwrap(), "very-secret-token".into());
        assert!(!format!("{:?}", discord.unwrap()).contains("very-secret-token"));
        let telegram = TelegramAdapter::new("b", &serde_json::from_str("{}").unwrap(), "123:secret".into());
        assert!(!format!("{:?}", telegram.unwrap()).contains("123:secret"));
    }
}
