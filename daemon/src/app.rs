//! Wiring: turn a checked config into loaded models, a knowledge-base store, and the
//! answerer the router uses.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use lore_core::{ChatModel, Embedder, PluginContext, ReplySink, Secret};
use lore_engine::{Generator, LlamaCrossEncoder, LlamaEmbedder};
use lore_knowledge::{KbHandle, KbStore, KnowledgeBase};
use lore_remote::{
    PoolSettings, RemoteEmbedder, RemoteEmbedderSettings, RemoteError, RemoteGenerator, RemoteGeneratorSettings,
};

use crate::config::{Config, DataDir, EmbedderPool, EmbedderSettings, GeneratorPool, GeneratorSettings};
use crate::question::pipeline::{respond, Chain, Outcome, Pipeline, Reranking};
use crate::question::prompt::Turn;
use crate::question::router::{Answerer, Place};
use crate::question::speaks::{self, ModelLanguages, Speaks};

/// Which models a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// Generator, embedder and (when configured) the cross-encoder: answering.
    All,
    /// The embedder (and cross-encoder) only: ingest, retrieval-only evaluation.
    WithoutGenerator,
}

/// Loaded models and the store.
pub struct App {
    pub config: Config,
    pub store: KbStore,
    /// The embedder, local or on a pool of servers.
    pub embedder: Arc<dyn Embedder>,
    /// The embedder when it runs here (`type: llama`).
    pub local_embedder: Option<LlamaEmbedder>,
    /// The embedder's pool when it runs on servers (`type: openai`).
    pub remote_embedder: Option<RemoteEmbedder>,
    /// Loaded with [`Load::All`] for a local model (`type: llama`).
    pub local_generator: Option<Generator>,
    /// Connected with [`Load::All`] for a pool of servers (`type: openai`).
    pub remote_generator: Option<RemoteGenerator>,
    /// The `cross-encoder` reranker's model (`models.reranker`), when configured.
    pub cross_encoder: Option<LlamaCrossEncoder>,
    /// What the generator (when loaded) and the embedder speak.
    pub languages: ModelLanguages,
}

impl App {
    pub async fn load(config: Config, load: Load) -> anyhow::Result<Self> {
        Self::load_with_adapters(config, load, &[]).await
    }

    /// Like [`App::load`], with LoRA adapter files a command loads into a local generator
    /// besides the bots' (`lore eval --adapter`).
    pub async fn load_with_adapters(config: Config, load: Load, extra: &[PathBuf]) -> anyhow::Result<Self> {
        config.validate_files()?;
        calibrations(&config)?;
        let store = open_store(&config).await?;
        if !matches!(&config.data_dir, DataDir::Folder(dir) if *dir == config.state_dir) {
            crate::owner_only::warn_if_shared(&config.state_dir, "state_dir");
        }
        crate::owner_only::tighten(&config.conversations_dir());
        let (embedder, local_embedder, remote_embedder): (Arc<dyn Embedder>, _, _) = match &config.models.embedder {
            EmbedderSettings::Llama(settings) => {
                let local = LlamaEmbedder::load(settings)?;
                (Arc::new(local.clone()), Some(local), None)
            }
            EmbedderSettings::Openai(pool) => {
                let remote = connect_embedder(&config, pool).await?;
                (Arc::new(remote.clone()), None, Some(remote))
            }
        };
        let (mut generator, mut remote) = (None, None);
        match (load, &config.models.generator) {
            (Load::All, GeneratorSettings::Llama(settings)) => {
                let mut adapters = config.adapter_files();
                adapters.extend(extra.iter().cloned());
                adapters.sort();
                adapters.dedup();
                generator = Some(Generator::load_with_adapters(settings, &adapters)?)
            }
            (Load::All, GeneratorSettings::Openai(pool)) => remote = Some(connect_generator(&config, pool).await?),
            (Load::WithoutGenerator, _) => {}
        }
        let cross_encoder = config.models.reranker.as_ref().map(LlamaCrossEncoder::load).transpose()?;
        let languages = ModelLanguages {
            generator: generator_languages(&config, generator.as_ref(), remote.as_ref()).await,
            embedder: embedder_languages(&config, local_embedder.as_ref(), remote_embedder.as_ref(), embedder.as_ref()),
        };
        Ok(Self {
            config,
            store,
            embedder,
            local_embedder,
            remote_embedder,
            local_generator: generator,
            remote_generator: remote,
            cross_encoder,
            languages,
        })
    }

    /// The model threads run here, by name, each with the token that fires if it dies: a
    /// daemon whose model is in an unknown state exits (see `service::run`).
    pub fn model_threads(&self) -> Vec<(&'static str, tokio_util::sync::CancellationToken)> {
        let mut threads = Vec::new();
        if let Some(generator) = &self.local_generator {
            threads.push(("generator", generator.died()));
        }
        if let Some(embedder) = &self.local_embedder {
            threads.push(("embedder", embedder.died()));
        }
        if let Some(cross_encoder) = &self.cross_encoder {
            threads.push(("reranker", cross_encoder.died()));
        }
        threads
    }

    /// The generator and its settings. Panics unless loaded with [`Load::All`].
    pub fn pipeline(&self) -> Pipeline {
        let g = &self.config.models.generator;
        let model = self.chat_model().expect("the generator is loaded with Load::All");
        Pipeline {
            model,
            max_answer_tokens: g.max_answer_tokens(),
            sampling: g.sampling().clone(),
            evidence: crate::question::evidence::EvidenceFinder::new(&self.plugin_context()),
        }
    }

    /// The generator, local or on servers, when it is loaded.
    fn chat_model(&self) -> Option<Arc<dyn ChatModel>> {
        match (&self.local_generator, &self.remote_generator) {
            (Some(local), _) => Some(Arc::new(local.clone())),
            (None, Some(remote)) => Some(Arc::new(remote.clone())),
            (None, None) => None,
        }
    }

    /// What retrievers and rerankers may use; the generator only when it is loaded.
    pub fn plugin_context(&self) -> PluginContext {
        PluginContext {
            embedder: self.embedder.clone(),
            scorer: match (&self.local_generator, &self.remote_generator) {
                (Some(local), _) => Some(Arc::new(local.clone()) as Arc<dyn lore_core::Scorer>),
                (None, Some(remote)) => Some(Arc::new(remote.clone()) as Arc<dyn lore_core::Scorer>),
                (None, None) => None,
            },
            cross_encoder: self.cross_encoder.clone().map(|c| Arc::new(c) as Arc<dyn lore_core::PairScorer>),
        }
    }

    /// A knowledge base to answer from (opened when first searched).
    pub fn kb(&self, name: &str) -> anyhow::Result<KbHandle> {
        Ok(KbHandle::new(self.store.clone(), name)?)
    }

    /// A knowledge base to ingest into, created empty when it does not exist.
    pub async fn kb_for_ingest(&self, name: &str) -> anyhow::Result<KnowledgeBase> {
        Ok(self.store.open_or_create(name, self.embedder.dim()).await?)
    }

    /// Brings `kb`'s generated questions to `wanted` per chunk, with the generator when
    /// loaded (see `ingest::questions`).
    pub async fn refresh_questions(
        &self,
        kb: &KnowledgeBase,
        wanted: u32,
        progress: crate::ingest::Progress,
    ) -> anyhow::Result<crate::ingest::questions::QuestionReport> {
        let model = self.chat_model();
        let parallel = self.config.models.generator.parallel();
        crate::ingest::questions::refresh(kb, wanted, model, self.embedder.as_ref(), parallel, progress).await
    }

    /// `place` resolved: its knowledge base, retriever and rerankers.
    pub fn chain(&self, place: Place) -> anyhow::Result<Chain> {
        chain(&self.store, place, &self.plugin_context(), &self.config, &self.languages)
    }

    /// The answerer the router uses. Panics unless loaded with [`Load::All`].
    pub fn answering(&self) -> Answering {
        Answering {
            pipeline: self.pipeline(),
            store: self.store.clone(),
            plugins: self.plugin_context(),
            config: Arc::new(self.config.clone()),
            languages: self.languages.clone(),
        }
    }

    /// The answers, votes and gold cases kept beside the knowledge bases.
    pub fn feedback(&self) -> anyhow::Result<crate::question::feedback::Feedback> {
        let c = &self.config;
        crate::question::feedback::Feedback::open(&self.store, &c.feedback_salt_file(), c.feedback_age())
    }
}

/// Every calibration the config names, read, with the key that names it: one that cannot
/// be read stops the start, naming its key.
pub fn calibrations(config: &Config) -> anyhow::Result<Vec<(String, crate::question::confidence::Calibration)>> {
    let mut out = Vec::new();
    for (key, abstain) in config.abstain_settings() {
        if let Some(file) = &abstain.calibration {
            let key = format!("{key}.calibration");
            let read = crate::question::confidence::Calibration::load(file)
                .map_err(|e| config.error(&key, format!("{e:#}")))?;
            out.push((key, read));
        }
    }
    Ok(out)
}

/// A connection of its own to the config's knowledge bases: the data directory (created
/// owner-only), or the object store, checked to be reachable.
pub async fn open_store(config: &Config) -> anyhow::Result<KbStore> {
    match &config.data_dir {
        DataDir::Folder(dir) => {
            // Knowledge bases and conversations are the owner's alone.
            crate::owner_only::warn_if_shared(dir, "data_dir");
            crate::question::memory::create_private_dir(dir)
                .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
            KbStore::open(dir).await.with_context(|| format!("cannot open the data directory {}", dir.display()))
        }
        DataDir::ObjectStore(uri) => Ok(KbStore::open_object_store(uri, &config.storage_options()).await?),
    }
}

/// The daemon's answerer: places become [`Chain`]s, questions go through the pipeline.
pub struct Answering {
    pub pipeline: Pipeline,
    pub store: KbStore,
    pub plugins: PluginContext,
    /// For each knowledge base's source folders (how sources are named).
    pub config: Arc<Config>,
    /// What the generator and the embedder speak.
    pub languages: ModelLanguages,
}

#[async_trait]
impl Answerer for Answering {
    type Route = Chain;

    fn route(&self, place: Place) -> anyhow::Result<Chain> {
        chain(&self.store, place, &self.plugins, &self.config, &self.languages)
    }

    async fn answer(
        &self,
        chain: &Chain,
        question: &str,
        history: &[Turn],
        reranking: Reranking,
        sink: &mut dyn ReplySink,
    ) -> anyhow::Result<Outcome> {
        let answer = self.pipeline.prepare_with(chain, question, history, reranking).await?;
        respond(answer, sink).await
    }

    async fn chunks(&self, chain: &Chain) -> anyhow::Result<usize> {
        Ok(chain.kb.count().await?)
    }

    async fn kb_version(&self, chain: &Chain) -> anyhow::Result<Option<u64>> {
        Ok(match chain.kb.get().await? {
            Some(kb) => Some(kb.version().await?),
            None => None,
        })
    }
}

/// The chain that answers in `place`: its knowledge base in `store`, searched and
/// reranked with the models in `cx`.
fn chain(
    store: &KbStore,
    place: Place,
    cx: &PluginContext,
    config: &Config,
    languages: &ModelLanguages,
) -> anyhow::Result<Chain> {
    let kb = KbHandle::new(store.clone(), &place.kb)?;
    let mut chain = Chain::build(kb, place.retrieval, place.template, cx, languages)?;
    chain.lora = place.lora;
    chain.answers_in = place.language;
    chain.names = crate::question::pipeline::SourceNames::of_kb(config, &place.kb);
    Ok(chain)
}

/// What the generator speaks: as the config or its GGUF says, else by its tokenizer
/// (unknown for one not loaded, or servers whose token counts are estimates).
async fn generator_languages(config: &Config, local: Option<&Generator>, remote: Option<&RemoteGenerator>) -> Speaks {
    let said = config.models.generator.languages();
    if let Some(speaks) = Speaks::from_lists(said, local.and_then(Generator::languages)) {
        return speaks;
    }
    let model: Arc<dyn ChatModel> = match (local, remote) {
        (Some(local), _) => Arc::new(local.clone()),
        (None, Some(remote)) => Arc::new(remote.clone()),
        (None, None) => return Speaks::unknown(),
    };
    let mut counts = Vec::new();
    for (language, sample) in speaks::samples() {
        counts.push((language, model.count_tokens(sample).await));
    }
    // Servers without `/tokenize` (or that stopped answering it meanwhile) were counted by
    // estimate, which says nothing of their tokenizer.
    if local.is_none() && remote.is_some_and(|r| r.counted_by() == lore_remote::CountedBy::Estimate) {
        return Speaks::unknown();
    }
    Speaks::from_token_counts(&counts)
}

/// What the embedder speaks: as the config or its GGUF says, else by its tokenizer.
fn embedder_languages(
    config: &Config,
    local: Option<&LlamaEmbedder>,
    remote: Option<&RemoteEmbedder>,
    embedder: &dyn Embedder,
) -> Speaks {
    let said = config.models.embedder.languages();
    if let Some(speaks) = Speaks::from_lists(said, local.and_then(LlamaEmbedder::languages)) {
        return speaks;
    }
    if remote.is_some_and(|r| r.counted_by() == lore_remote::CountedBy::Estimate) {
        return Speaks::unknown();
    }
    let counts: Vec<_> =
        speaks::samples().map(|(language, sample)| (language, embedder.count_tokens(sample))).collect();
    Speaks::from_token_counts(&counts)
}

/// The pool of servers `models.generator` names (`type: openai`). An `llm` reranker is
/// refused here when the servers cannot score; when none answers yet, that is only logged.
async fn connect_generator(config: &Config, g: &GeneratorPool) -> anyhow::Result<RemoteGenerator> {
    let pool = PoolSettings {
        // A long prompt on a busy server may take a while before its first token.
        timeout: std::time::Duration::from_secs(120),
        ..pool_settings(
            config,
            "models.generator",
            &g.endpoints,
            g.api_key_env.as_deref(),
            g.max_in_flight,
            g.request_deadline_secs,
        )?
    };
    let settings = RemoteGeneratorSettings {
        pool,
        model: g.model.clone(),
        chat: g.api == crate::config::RemoteApi::Chat,
        context_tokens: g.context_tokens,
        tokenizer: g.tokenizer.clone(),
    };
    let remote = RemoteGenerator::new(settings)?;
    if config.most_llm_candidates() > 0 {
        match remote.check_scoring().await {
            Ok(()) => {}
            Err(why @ RemoteError::NoScoring { .. }) => {
                return Err(config.error("retrieval.rerankers", llm_reranker_cannot(&why)).into())
            }
            Err(why) => {
                tracing::warn!(%why, "could not check that the engine servers can score passages for the `llm` reranker")
            }
        }
    }
    Ok(remote)
}

/// What `lore check` and the start say when the servers cannot score.
pub fn llm_reranker_cannot(why: &dyn std::fmt::Display) -> String {
    format!("the `llm` reranker (the default) cannot work with the servers of models.generator: {why}. Set `rerankers: []` or a `cross-encoder`")
}

/// The pool of servers `models.embedder` names (`type: openai`).
async fn connect_embedder(config: &Config, e: &EmbedderPool) -> anyhow::Result<RemoteEmbedder> {
    let pool = pool_settings(
        config,
        "models.embedder",
        &e.endpoints,
        e.api_key_env.as_deref(),
        e.max_in_flight,
        e.request_deadline_secs,
    )?;
    let settings = RemoteEmbedderSettings {
        pool,
        model: e.model.clone(),
        batch_texts: e.batch_texts,
        max_tokens: e.batch_tokens,
        tokenizer: e.tokenizer.clone(),
    };
    RemoteEmbedder::connect(settings).await.map_err(|why| {
        anyhow::anyhow!(
            "{}: the embedder servers ({}) cannot embed: {why}",
            config.file.display(),
            e.endpoints.join(", ")
        )
    })
}

fn pool_settings(
    config: &Config,
    section: &str,
    endpoints: &[String],
    api_key_env: Option<&str>,
    max_in_flight: usize,
    request_deadline_secs: u64,
) -> anyhow::Result<PoolSettings> {
    let api_key = match api_key_env {
        Some(var) => {
            Some(std::env::var(var).ok().filter(|k| !k.trim().is_empty()).map(Secret::new).ok_or_else(|| {
                config.error(&format!("{section}.api_key_env"), format!("environment variable {var} holds no key"))
            })?)
        }
        None => None,
    };
    Ok(PoolSettings {
        endpoints: endpoints.to_vec(),
        api_key,
        max_in_flight,
        health_interval: std::time::Duration::from_secs(5),
        timeout: std::time::Duration::from_secs(30),
        request_deadline: std::time::Duration::from_secs(request_deadline_secs),
    })
}
