//! `bots:`: each bot's platform, knowledge base, prompt, retrieval overrides, channels,
//! who may ask, and LoRA adapters.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{AdapterConfig, Config, ConfigError, GeneratorSettings, RetrievalOverride, Source};

/// One bot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotConfig {
    /// Where the bot talks: `type: console`, `discord` or `telegram`.
    #[serde(default)]
    pub adapter: AdapterConfig,
    /// The knowledge base it answers from, unless a channel says otherwise.
    pub knowledge_base: String,
    /// A prompt template: a name in `prompts/` (`default`, `plain`) or a file path.
    #[serde(default)]
    pub prompt: Option<String>,
    /// System message for chat models.
    #[serde(default)]
    pub system: Option<String>,
    /// The language of its built-in prompts and "I don't know" (`en`, `he`); default: its
    /// knowledge base's. A `system` or `abstain_text` of its own is used as written.
    #[serde(default)]
    pub language: Option<lore_knowledge::Language>,
    /// Retrieval settings for this bot, over the top-level `retrieval`.
    #[serde(default)]
    pub retrieval: RetrievalOverride,
    /// Per-channel settings, by Discord channel/thread id or Telegram chat id.
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelConfig>,
    /// Who may ask (empty lists = everyone).
    #[serde(default)]
    pub allow: Allow,
    /// User ids who may run `/kb`, and `/reset` in groups and channels (anyone may reset
    /// their own private chat).
    #[serde(default)]
    pub admins: Vec<String>,
    /// Recent turns kept per conversation.
    #[serde(default = "default_memory_turns")]
    pub memory_turns: usize,
    /// LoRA adapters for this bot's answers (`[{path: x.gguf, scale: 1.0}]`): GGUF files
    /// made for the generator's base model, loaded once with it and applied to this bot's
    /// conversations only. At most one per bot (llama-cpp-2 sets one adapter at a time).
    #[serde(default)]
    pub adapters: Vec<lore_core::LoraAdapter>,
}

fn default_memory_turns() -> usize {
    6
}

impl BotConfig {
    /// A console bot on `kb` with default settings.
    pub fn console(kb: &str) -> Self {
        Self {
            adapter: AdapterConfig::Console,
            knowledge_base: kb.to_string(),
            prompt: None,
            system: None,
            language: None,
            retrieval: RetrievalOverride::default(),
            channels: BTreeMap::new(),
            allow: Allow::default(),
            admins: vec![],
            memory_turns: default_memory_turns(),
            adapters: vec![],
        }
    }

    /// Its adapter files and calibration files expanded (`name` is the bot's).
    pub(super) fn expand_paths(&mut self, name: &str, source: &Source) -> Result<(), ConfigError> {
        for (i, lora) in self.adapters.iter_mut().enumerate() {
            lora.path = source.expand(&lora.path, &format!("bots.{name}.adapters.{i}.path"))?;
        }
        self.retrieval.expand_paths(&format!("bots.{name}.retrieval"), source)?;
        for (id, channel) in self.channels.iter_mut() {
            channel.retrieval.expand_paths(&format!("bots.{name}.channels.{id}.retrieval"), source)?;
        }
        Ok(())
    }
}

/// A channel's settings (`bots.NAME.channels.ID`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// The knowledge base this channel answers from, instead of the bot's.
    pub knowledge_base: Option<String>,
    /// Retrieval settings for this channel, over the bot's.
    #[serde(default)]
    pub retrieval: RetrievalOverride,
}

/// Who may ask a bot (`bots.NAME.allow`): anyone on one of the lists.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    /// User ids.
    #[serde(default)]
    pub users: Vec<String>,
    /// Discord role ids.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Telegram chat ids / Discord channel ids.
    #[serde(default)]
    pub chats: Vec<String>,
}

impl Allow {
    /// Whether `user` (with `roles`, in `chat`) may ask.
    pub fn permits(&self, user: &str, roles: &[String], chat: &str) -> bool {
        let open = self.users.is_empty() && self.roles.is_empty() && self.chats.is_empty();
        open || self.users.iter().any(|u| u == user)
            || self.roles.iter().any(|r| roles.contains(r))
            || self.chats.iter().any(|c| c == chat)
    }
}

/// A bot the command line or a request named that the config does not have.
#[derive(Debug, thiserror::Error)]
#[error("{}: no bot named {name:?} (configured: {})", file.display(), if known.is_empty() { "none".to_string() } else { known.join(", ") })]
pub struct UnknownBot {
    /// The config file.
    pub file: PathBuf,
    /// The name asked for.
    pub name: String,
    /// The bots there are.
    pub known: Vec<String>,
}

impl Config {
    /// Bot `name`, or an error naming the bots there are.
    pub fn bot(&self, name: &str) -> Result<&BotConfig, UnknownBot> {
        self.bots.get(name).ok_or_else(|| UnknownBot {
            file: self.file.clone(),
            name: name.to_string(),
            known: self.bots.keys().cloned().collect(),
        })
    }

    /// Every bot's LoRA adapter files, each once, in a fixed order: what the generator loads.
    pub fn adapter_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> =
            self.bots.values().flat_map(|b| b.adapters.iter().map(|a| a.path.clone())).collect();
        files.sort();
        files.dedup();
        files
    }

    /// `bots`: their adapters can be applied, and the knowledge bases and rerankers they
    /// and their channels name are configured.
    pub(super) fn check_bots(&self) -> Result<(), ConfigError> {
        for (name, bot) in &self.bots {
            if let Some(feature) = bot.adapter.missing_feature() {
                let why = format!(
                    "this lore was built without {feature}: build it with the `{feature}` feature (on by default: `cargo build --release -p lore`)"
                );
                return Err(self.error(&format!("bots.{name}.adapter.type"), why));
            }
            if bot.adapters.len() > 1 {
                let why = "one adapter per bot: llama.cpp's Rust binding (llama-cpp-2) sets one adapter at a time; merge them into one with llama.cpp's tools, or give each its own bot";
                return Err(self.error(&format!("bots.{name}.adapters"), why));
            }
            if !bot.adapters.is_empty() && !matches!(self.models.generator, GeneratorSettings::Llama(_)) {
                let why = "LoRA adapters apply to a local generator (type: llama); servers such as vLLM serve adapters as models of their own: point another bot's generator at that model";
                return Err(self.error(&format!("bots.{name}.adapters"), why));
            }
            if let Some((i, lora)) = bot.adapters.iter().enumerate().find(|(_, l)| !l.has_valid_scale()) {
                return Err(self.error(
                    &format!("bots.{name}.adapters.{i}.scale"),
                    format!("{} must be a number from 0 up", lora.scale),
                ));
            }
            self.check_kb_name(&format!("bots.{name}.knowledge_base"), &bot.knowledge_base)?;
            if let Some(r) = &bot.retrieval.rerankers {
                self.check_rerankers(&format!("bots.{name}.retrieval.rerankers"), r)?;
            }
            for (ch, c) in &bot.channels {
                if let Some(kb) = &c.knowledge_base {
                    self.check_kb_name(&format!("bots.{name}.channels.{ch}.knowledge_base"), kb)?;
                }
                if let Some(r) = &c.retrieval.rerankers {
                    self.check_rerankers(&format!("bots.{name}.channels.{ch}.retrieval.rerankers"), r)?;
                }
            }
        }
        Ok(())
    }

    /// `kb` (the value of `key`) is a configured knowledge base.
    fn check_kb_name(&self, key: &str, kb: &str) -> Result<(), ConfigError> {
        if self.knowledge_bases.contains_key(kb) {
            return Ok(());
        }
        let known: Vec<&str> = self.knowledge_bases.keys().map(String::as_str).collect();
        Err(self.error(
            key,
            format!(
                "unknown knowledge base {kb:?} (known: {})",
                if known.is_empty() { "none".into() } else { known.join(", ") }
            ),
        ))
    }
}
