//! Wiring: turn a checked config into loaded models, a knowledge-base store and bots.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use lore_plugins::{KbStore, KnowledgeBase};
use tokio::sync::Mutex;

use crate::config::{Config, Retrieval};
use crate::engine::{Generator, LlamaCrossEncoder, LlamaEmbedder};
use crate::pipeline::Pipeline;
use crate::prompt::Template;

/// Loaded models and the store. The generator loads only for commands that need it.
pub struct App {
    pub config: Config,
    pub store: KbStore,
    pub embedder: LlamaEmbedder,
    pub generator: Option<Generator>,
    /// The `cross-encoder` reranker's model (`models.reranker`), when configured.
    pub cross_encoder: Option<LlamaCrossEncoder>,
    kbs: Mutex<HashMap<String, KnowledgeBase>>,
}

impl App {
    pub async fn load(config: Config, with_generator: bool) -> anyhow::Result<Self> {
        config.validate_files()?;
        let store = KbStore::open(&config.data_dir)
            .await
            .with_context(|| format!("cannot open the data directory {}", config.data_dir.display()))?;
        let embedder = LlamaEmbedder::load(&config.models.embedder)?;
        let generator = if with_generator { Some(Generator::load(&config.models.generator)?) } else { None };
        let cross_encoder = config.models.reranker.as_ref().map(LlamaCrossEncoder::load).transpose()?;
        Ok(Self { config, store, embedder, generator, cross_encoder, kbs: Mutex::new(HashMap::new()) })
    }

    pub fn pipeline(&self) -> Pipeline {
        let g = &self.config.models.generator;
        Pipeline {
            generator: self.generator.clone().expect("loaded with the generator"),
            plugins: self.plugin_context(),
            max_answer_tokens: g.max_answer_tokens,
            sampling: g.sampling.clone(),
        }
    }

    /// Opens a knowledge base, creating it when `create` is set.
    pub async fn kb(&self, name: &str, create: bool) -> anyhow::Result<KnowledgeBase> {
        let mut kbs = self.kbs.lock().await;
        if let Some(kb) = kbs.get(name) {
            return Ok(kb.clone());
        }
        let dim = lore_plugins::Embedder::dim(&self.embedder);
        let kb = if create {
            self.store.open_or_create(name, dim).await?
        } else {
            self.store.open_kb(name).await?.ok_or_else(|| {
                anyhow::anyhow!("knowledge base {name:?} is empty: add files with `lore ingest --kb {name} FILES...`")
            })?
        };
        kbs.insert(name.to_string(), kb.clone());
        Ok(kb)
    }

    /// The template and retrieval settings of a bot (or the defaults, for `--kb`).
    pub fn bot_settings(&self, bot: Option<&str>) -> anyhow::Result<(Template, Retrieval)> {
        let base = self.config_dir();
        match bot {
            None => Ok((Template::default(), self.config.retrieval.clone())),
            Some(name) => {
                let b = self.config.bots.get(name).ok_or_else(|| unknown_bot(&self.config, name))?;
                let template = Template::load(b.prompt.as_deref(), b.system.as_deref(), &base)?;
                Ok((template, self.config.retrieval.with(&b.retrieval)))
            }
        }
    }

    /// What retrievers and rerankers may use; the generator only when it is loaded.
    pub fn plugin_context(&self) -> lore_plugins::PluginContext {
        lore_plugins::PluginContext {
            embedder: Arc::new(self.embedder.clone()),
            scorer: self.generator.clone().map(|g| Arc::new(g) as Arc<dyn lore_plugins::Scorer>),
            cross_encoder: self.cross_encoder.clone().map(|c| Arc::new(c) as Arc<dyn lore_plugins::PairScorer>),
        }
    }

    pub fn config_dir(&self) -> PathBuf {
        self.config.file.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

pub fn unknown_bot(config: &Config, name: &str) -> anyhow::Error {
    let known: Vec<&str> = config.bots.keys().map(String::as_str).collect();
    anyhow::anyhow!(
        "{}: no bot named {name:?} (configured: {})",
        config.file.display(),
        if known.is_empty() { "none".to_string() } else { known.join(", ") }
    )
}
