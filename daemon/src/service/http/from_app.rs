//! The API's parts in the daemon: the router answers for the bots, the app's models and
//! knowledge bases serve the rest ([`ApiState::of_app`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lore_core::{ChatModel, GenerateError, PromptText, Rating, ReplySink};
use lore_knowledge::KbHandle;
use lore_remote::{EndpointState, RemoteGenerator};

use super::health::Every;
use super::state::{ApiState, Bots, EmbedderModel, GeneratorModel, Health, Key, LocalModel, Passage, Rows, Sources};
use super::AdapterStates;
use crate::app::{Answering, App};
use crate::question::feedback::{FeedbackError, Vote};
use crate::question::line::{Line, Refusal};
use crate::question::pipeline::{Outcome, SourceNames};
use crate::question::prompt::Turn;
use crate::question::router::{Admitted, Answerer, Router};

/// How old the row counts `/ready` and `/metrics` report may be.
pub(super) const KB_ROWS_EVERY: Duration = Duration::from_secs(15);
/// How long reading the row counts may take (an object store that does not answer).
const KB_ROWS_TIMEOUT: Duration = Duration::from_secs(10);

impl ApiState {
    /// What the API answers from in `lore run`: `router`'s bots and line, `model` (the
    /// generator the bots use, `App::pipeline`'s), `app`'s other models and knowledge bases
    /// (their rows read at most every [`KB_ROWS_EVERY`]).
    pub(super) fn of_app(
        app: &Arc<App>,
        model: Arc<dyn ChatModel>,
        router: Arc<Router<Answering>>,
        adapters: AdapterStates,
        keys: Vec<Key>,
    ) -> Self {
        let g = &app.config.models.generator;
        let local = app.local_generator.clone().map(|local| Arc::new(local) as Arc<dyn LocalModel>);
        Self {
            feedback: router.feedback().cloned(),
            bots: router,
            generator: GeneratorModel {
                name: g.name(),
                model,
                local,
                max_answer_tokens: g.max_answer_tokens(),
                context_tokens: g.context_tokens(),
                sampling: g.sampling().clone(),
            },
            embedder: EmbedderModel { name: app.config.models.embedder.name(), embedder: app.embedder.clone() },
            keys,
            sources: Arc::new(AppSources(app.clone())),
            health: Arc::new(AppHealth::new(app, KB_ROWS_EVERY)),
            adapters,
        }
    }
}

#[async_trait]
impl<A: Answerer> Bots for Router<A> {
    fn names(&self) -> Vec<String> {
        self.bots().map(str::to_string).collect()
    }

    fn has_bot(&self, bot: &str) -> bool {
        Router::has_bot(self, bot)
    }

    fn admit(&self, model: &str, asker: &str) -> Result<Admitted, Refusal> {
        Router::admit(self, model, asker)
    }

    async fn answer_with(
        &self,
        bot: &str,
        admitted: Admitted,
        question: &str,
        history: &[Turn],
        sink: &mut dyn ReplySink,
    ) -> anyhow::Result<Outcome> {
        Router::answer_with(self, bot, admitted, question, history, sink).await
    }

    fn line(&self) -> &Line {
        Router::line(self)
    }

    async fn vote(
        &self,
        bot: &str,
        id: &str,
        asker: &str,
        rating: Rating,
        comment: Option<&str>,
    ) -> Result<Vote, FeedbackError> {
        let at = crate::metrics::Labels { bot, platform: "api", channel: "default" };
        self.record_vote(&at, asker, id, rating, comment).await
    }
}

#[async_trait]
impl LocalModel for lore_engine::Generator {
    fn tokens(&self, prompt: &PromptText) -> Vec<i32> {
        lore_engine::Generator::tokens(self, prompt)
    }

    fn prompt_from_token_ids(&self, ids: &[i64]) -> Result<PromptText, String> {
        lore_engine::Generator::prompt_from_token_ids(self, ids)
    }

    async fn prompt_logprobs(&self, text: &str) -> Result<Vec<(String, Option<f64>)>, GenerateError> {
        lore_engine::Generator::prompt_logprobs(self, text).await
    }

    fn kv_cells(&self) -> (usize, usize) {
        (lore_engine::Generator::kv_cells(self), self.kv_cells_in_use())
    }
}

/// Passages read from the knowledge base a bot answers from.
struct AppSources(Arc<App>);

#[async_trait]
impl Sources for AppSources {
    async fn passage(&self, bot: &str, id: &str) -> anyhow::Result<Option<Passage>> {
        let config = &self.0.config;
        let kb_name = &config.bot(bot)?.knowledge_base;
        let kb = self.0.kb(kb_name)?;
        let Some(chunk) = kb.chunk(id).await? else { return Ok(None) };
        let source = SourceNames::of_kb(config, kb_name).name(&chunk.source);
        Ok(Some(Passage { chunk, source }))
    }
}

/// The bots' knowledge bases, each opened once, and the generator's servers.
pub(super) struct AppHealth {
    bots: Vec<(String, String)>,
    kb_rows: KbRows,
    remote: Option<RemoteGenerator>,
}

impl AppHealth {
    /// `app`'s knowledge bases, their rows read again when older than `every`.
    pub(super) fn new(app: &App, every: Duration) -> Self {
        let bots = app.config.bots.iter().map(|(name, bot)| (name.clone(), bot.knowledge_base.clone())).collect();
        Self { bots, kb_rows: KbRows::new(app, every), remote: app.remote_generator.clone() }
    }
}

#[async_trait]
impl Health for AppHealth {
    fn knowledge_bases(&self) -> Vec<(String, String)> {
        self.bots.clone()
    }

    async fn rows(&self) -> BTreeMap<String, Rows> {
        self.kb_rows.read().await
    }

    fn engines(&self) -> Option<Vec<EndpointState>> {
        self.remote.as_ref().map(RemoteGenerator::endpoints)
    }
}

/// The bots' knowledge bases, each opened once, and their latest row counts.
struct KbRows {
    handles: BTreeMap<String, Result<KbHandle, String>>,
    latest: Every<BTreeMap<String, Rows>>,
}

impl KbRows {
    /// The bots' knowledge bases, their rows read again when older than `every`.
    fn new(app: &App, every: Duration) -> Self {
        let handles = app
            .config
            .bots
            .values()
            .map(|bot| (bot.knowledge_base.clone(), app.kb(&bot.knowledge_base).map_err(|e| format!("{e:#}"))))
            .collect();
        Self { handles, latest: Every::new(every) }
    }

    /// Each knowledge base's rows, read at most once a period.
    async fn read(&self) -> BTreeMap<String, Rows> {
        self.latest
            .get(|| async {
                let mut rows = BTreeMap::new();
                for (name, handle) in &self.handles {
                    let counted = match handle {
                        Ok(handle) => match tokio::time::timeout(KB_ROWS_TIMEOUT, handle.count()).await {
                            Ok(counted) => counted.map_err(|e| format!("{e:#}")),
                            Err(_) => Err(format!("counting its rows took over {} s", KB_ROWS_TIMEOUT.as_secs())),
                        },
                        Err(why) => Err(why.clone()),
                    };
                    rows.insert(name.clone(), counted);
                }
                rows
            })
            .await
    }
}

/// The daemon's own parts on stand-in models and a knowledge base in a temporary folder:
/// the pipeline answers through the router, a cited passage opens from the bot's knowledge
/// base, row counts are read once in a while.
#[cfg(test)]
mod tests {
    use std::path::Path;

    use axum::body::Body;
    use axum::http::{header, StatusCode};
    use lore_core::testing::{EchoModel, HashEmbedder};
    use lore_core::{Chunk, Embedder, PluginContext, Sampling};
    use lore_knowledge::KbStore;
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use super::*;
    use crate::config::Config;
    use crate::question::evidence::EvidenceFinder;
    use crate::question::pipeline::Pipeline;
    use crate::service::http::tests::{call, get, post, question, CONFIG};
    use crate::service::http::{routes, Server};

    /// A daemon's API: bot `docs` answers from a knowledge base holding one passage about
    /// bees, `guide` from one about wasps.
    struct Daemon {
        server: Arc<Server>,
        app: Arc<App>,
        embedder: Arc<HashEmbedder>,
        max_body_bytes: usize,
        _dir: tempfile::TempDir,
    }

    impl Daemon {
        async fn start(keys: &[&str]) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let config = Config::parse(Path::new("lore.yaml"), CONFIG).unwrap();
            let store = KbStore::open(dir.path()).await.unwrap();
            let embedder = Arc::new(HashEmbedder::default());
            for (name, source, text) in [("bees", "bees.md", "Bees dance."), ("wasps", "wasps.md", "Wasps sting.")] {
                let kb = store.open_or_create(name, embedder.dim()).await.unwrap();
                let chunk = Chunk::new(source, 0, 1, 1, text.into());
                kb.upsert(&[(chunk.clone(), embedder.vector(&chunk.text))]).await.unwrap();
                kb.ensure_fulltext_index().await.unwrap();
            }
            // Recording starts with the daemon.
            crate::metrics::handle();
            let plugins = PluginContext { embedder: embedder.clone(), scorer: None, cross_encoder: None };
            let model: Arc<dyn ChatModel> = Arc::new(EchoModel::new(512, "Bees dance [1]."));
            let evidence = EvidenceFinder::new(&plugins);
            let pipeline =
                Pipeline { model: model.clone(), max_answer_tokens: 64, sampling: Sampling::greedy(), evidence };
            let config_arc = Arc::new(config.clone());
            let languages = crate::question::speaks::ModelLanguages::default();
            let answering = Answering { pipeline, store: store.clone(), plugins, config: config_arc, languages };
            let router = Arc::new(Router::new(&config, answering, None).unwrap());
            let cfg = config.server.clone().unwrap();
            let app = Arc::new(App {
                config,
                store,
                embedder: embedder.clone(),
                local_embedder: None,
                remote_embedder: None,
                local_generator: None,
                remote_generator: None,
                cross_encoder: None,
                languages: Default::default(),
            });
            let keys = keys.iter().map(|k| Key { value: k.to_string(), bots: Vec::new() }).collect();
            let mut api = ApiState::of_app(&app, model, router, AdapterStates::default(), keys);
            // Row counts kept for the whole test, however slow the machine.
            api.health = Arc::new(AppHealth::new(&app, Duration::from_secs(3600)));
            let server = Arc::new(Server::new(&cfg, cfg.listen, api));
            Self { server, app, embedder, max_body_bytes: cfg.max_body_bytes, _dir: dir }
        }

        fn routes(&self) -> axum::Router {
            routes(self.server.clone(), self.max_body_bytes)
        }

        async fn call(&self, request: axum::http::Request<Body>) -> (StatusCode, Value) {
            call(self.routes(), request).await
        }
    }

    #[tokio::test]
    async fn the_pipeline_answers_through_the_router_and_a_cited_passage_opens_for_that_bot_only() {
        let d = Daemon::start(&[]).await;
        let (status, answer) = d.call(post("/v1/chat/completions", &question("Why do bees dance?"))).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(content.starts_with("Bees dance [1].") && content.contains("Sources:\n[1] bees.md"), "{content}");
        assert_eq!((answer["abstained"].as_bool(), answer["confidence"].as_f64()), (Some(false), None), "{answer}");
        let source = &answer["sources"][0];
        assert_eq!(source["source"], "bees.md", "{answer}");
        let url = source["url"].as_str().unwrap();
        let id = source["id"].as_str().unwrap();
        assert_eq!(url, format!("/v1/sources/{id}?model=docs"));
        let open = |path: &str| get(path).body(Body::empty()).unwrap();
        let (status, passage) = d.call(open(url)).await;
        assert_eq!(status, StatusCode::OK, "{passage}");
        assert_eq!((passage["text"].as_str(), passage["source"].as_str()), (Some("Bees dance."), Some("bees.md")));
        assert_eq!((passage["location"].as_str(), &passage["lines"]), (Some("line 1"), &json!([1, 1])));
        let (status, body) = d.call(open(&format!("/v1/sources/{id}?model=other"))).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("model_not_found")));
        let (status, body) = d.call(open(&format!("/v1/sources/{id}?model=guide"))).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "wasps only");
        for wrong in ["00ff", "../../etc/passwd", "%27%20OR%201%3D1"] {
            let (status, body) = d.call(open(&format!("/v1/sources/{wrong}?model=docs"))).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{wrong}: {body}");
        }
        // One piece only: the abstention's text, with the nearest topic.
        let (status, abstained) = d.call(post("/v1/chat/completions", &question("Who?"))).await;
        assert_eq!((status, abstained["abstained"].as_bool()), (StatusCode::OK, Some(true)), "{abstained}");
        let said = abstained["choices"][0]["message"]["content"].as_str().unwrap();
        let abstain_text = &d.app.config.retrieval.abstain_text;
        assert!(said.starts_with(abstain_text.as_str()) && said.contains("(bees.md, line 1)"), "{said}");
    }

    #[tokio::test]
    async fn ready_and_metrics_read_the_knowledge_base_rows_once_a_while() {
        let d = Daemon::start(&["secret"]).await;
        let with_key = |path: &str| {
            let request = get(path).header(header::AUTHORIZATION, "Bearer secret");
            request.body(Body::empty()).unwrap()
        };
        assert_eq!(d.call(get("/ready").body(Body::empty()).unwrap()).await, (StatusCode::OK, json!({"ready": true})));
        let (_, details) = d.call(with_key("/ready")).await;
        let kbs = json!({"bees": {"ok": true, "rows": 1}, "wasps": {"ok": true, "rows": 1}});
        assert_eq!(details["knowledge_bases"], kbs, "{details}");
        let (status, text) = d.call(with_key("/metrics")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.as_str().unwrap().contains("lore_knowledge_base_rows{kb=\"bees\"} 1"), "{text}");

        // A new row is not seen before the counts are old: a storm of requests reads the
        // knowledge base once in a while, not once per request.
        let kb = d.app.store.open_kb("bees").await.unwrap().unwrap();
        let chunk = Chunk::new("more.md", 0, 1, 1, "Wasps do not dance.".into());
        kb.upsert(&[(chunk.clone(), d.embedder.vector(&chunk.text))]).await.unwrap();
        let storm: Vec<_> = (0..20)
            .map(|_| {
                let (routes, request) = (d.routes(), with_key("/ready"));
                tokio::spawn(async move { routes.oneshot(request).await.unwrap().status() })
            })
            .collect();
        for request in storm {
            assert_eq!(request.await.unwrap(), StatusCode::OK);
        }
        assert_eq!(d.call(with_key("/ready")).await.1["knowledge_bases"]["bees"]["rows"], 1);
    }
}
