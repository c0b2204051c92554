//! `lore bench`: the engine's benchmarks (`lore_engine::bench`) plus what only the daemon
//! can measure: retrieval from a knowledge base and time to first token through the whole
//! answering path, many questions at once through the router, and the HTTP hop to a
//! remote engine — with their flags and their rows of the table.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use lore_core::{Chunk, Embedder, Event, Sampling};
use lore_engine::bench::{number, percentile, tempdir, EngineArgs, ExtraTest, Row};
use lore_engine::{Generator, LlamaEmbedder};
use lore_knowledge::{KbStore, RetrieverConfig};
use serde_json::{json, Value};

use crate::config::Retrieval;
use crate::question::evidence::EvidenceFinder;
use crate::question::pipeline::{Answer, Chain, Pipeline};
use crate::question::prompt::Template;
use crate::question::speaks::ModelLanguages;

/// `lore bench`'s flags: the engine's, and the daemon's tests' own.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Questions asked at once in the load test (0 = skip it).
    #[arg(long, default_value_t = 24)]
    pub load_questions: usize,
    /// Chunks in the synthetic knowledge base of the time-to-first-token test.
    #[arg(long, default_value_t = 10_000)]
    pub kb_chunks: usize,
    /// Only the load test, answered by the config's generator (here or a pool of servers)
    /// with the config's retrieval settings.
    #[arg(long)]
    pub load_only: bool,
}

/// Every measurement, with retrieval, the load test and the HTTP hop.
pub async fn run(args: BenchArgs, gen_path: PathBuf, emb_path: PathBuf) -> anyhow::Result<()> {
    let retrieval = RetrievalTest { chunks: args.kb_chunks };
    let load = LoadTest { questions: args.load_questions };
    lore_engine::bench::run(args.engine, gen_path, emb_path, &[&retrieval, &load, &HttpHopTest]).await
}

/// Many people asking at once through the router's line and the whole answering path
/// (hybrid retrieval, the `llm` reranker, generation) on the sample knowledge base: how
/// many questions a minute, and how long each waits for its first word, with the `llm`
/// reranker skipped while others wait (the default) and kept for everyone.
struct LoadTest {
    /// Questions asked at once (0 = skip the test).
    questions: usize,
}

#[async_trait::async_trait]
impl ExtraTest for LoadTest {
    fn key(&self) -> &'static str {
        "load"
    }

    fn title(&self) -> &'static str {
        "many questions at once"
    }

    async fn run(&self, _: &EngineArgs, generator: &Generator, embedder: &LlamaEmbedder) -> anyhow::Result<Value> {
        if self.questions == 0 {
            return Ok(Value::Null);
        }
        let plugins = plugins(generator, embedder);
        let models = LoadModels {
            pipeline: Pipeline {
                model: Arc::new(generator.clone()),
                max_answer_tokens: 64,
                sampling: Sampling::greedy(),
                evidence: EvidenceFinder::new(&plugins),
            },
            plugins,
            retrieval: None,
            parallel: generator.parallel(),
            local: Some(generator.clone()),
        };
        load_test(&models, self.questions).await
    }

    fn rows(&self, result: &Value) -> Vec<Row> {
        let mut rows = Vec::new();
        for (name, l) in result.as_object().into_iter().flatten() {
            let label = name.replace("rerank_when_busy_", "rerank_when_busy: ");
            let name = format!("{} questions at once, {label}: questions/min", l["questions"]);
            rows.push(Row::new(name, number(&l["questions_per_min"])));
            rows.push(Row::new("  time to first word (ms p50)", number(&l["ttft_ms_p50"])));
            rows.push(Row::new("  time to first word (ms p95)", number(&l["ttft_ms_p95"])));
        }
        rows
    }
}

/// `lore bench --load-only`: the load test alone, answered by the config's generator (here
/// or on a pool of servers) with the config's retrieval settings, so the same questions
/// can be put to Lore's own engine and to another server (`scripts/peer-bench`).
pub async fn run_load(app: &crate::app::App, args: &BenchArgs) -> anyhow::Result<()> {
    let plugins = app.plugin_context();
    let models = LoadModels {
        pipeline: Pipeline { max_answer_tokens: 64, sampling: Sampling::greedy(), ..app.pipeline() },
        plugins,
        retrieval: Some(app.config.retrieval.clone()),
        parallel: app.config.models.generator.parallel(),
        local: app.local_generator.clone(),
    };
    let result = load_test(&models, args.load_questions.max(1)).await?;
    if args.engine.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(());
    }
    let engine = match &app.config.models.generator {
        crate::config::GeneratorSettings::Llama(g) => format!("{} here", g.path.display()),
        crate::config::GeneratorSettings::Openai(p) => format!("{} on {}", p.model, p.endpoints.join(", ")),
    };
    println!("generator: {engine}, {} answered at once", models.parallel);
    for (name, l) in result.as_object().into_iter().flatten() {
        let label = name.replace("rerank_when_busy_", "rerank_when_busy: ");
        let (per_min, p50, p95) = (&l["questions_per_min"], &l["ttft_ms_p50"], &l["ttft_ms_p95"]);
        println!(
            "{} of {} questions answered at once, {label}: {:.1} questions/min, first word p50 {:.0} ms, p95 {:.0} ms",
            l["answered"],
            l["questions"],
            number(per_min),
            number(p50),
            number(p95)
        );
    }
    Ok(())
}

/// What the load test answers with: the generator (here or on servers), what retrievers
/// and rerankers use, and the retrieval settings (`None`: the defaults).
struct LoadModels {
    pipeline: Pipeline,
    plugins: lore_core::PluginContext,
    retrieval: Option<Retrieval>,
    parallel: usize,
    /// A generator loaded here, whose prompt cache is emptied before each run.
    local: Option<Generator>,
}

/// The sample knowledge base ingested into a folder of its own, then the load, with the
/// `llm` reranker skipped while others wait (the default) and, when there is one, kept.
async fn load_test(models: &LoadModels, questions: usize) -> anyhow::Result<Value> {
    let dir = tempdir()?;
    let store = KbStore::open(&dir).await?;
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/sample");
    let embedder = models.plugins.embedder.as_ref();
    let kb = store.open_or_create("sample", embedder.dim()).await?;
    let settings = crate::ingest::Settings::new(&crate::config::Chunking::default());
    crate::ingest::ingest(&kb, embedder, &[sample], &settings, crate::ingest::Progress::Quiet).await?;
    // The router reads the line and the places from a config; the models are handed over.
    let yaml = format!(
        "models:\n  generator:\n    path: generator.gguf\n    parallel: {parallel}\n    max_queue: 256\n  embedder:\n    path: embedder.gguf\n\
         knowledge_bases:\n  sample: {{}}\nbots:\n  load:\n    knowledge_base: sample\n\
         line:\n  max_waiting_questions: {questions}\n",
        parallel = models.parallel,
    );
    let mut config = crate::config::Config::parse(std::path::Path::new("bench.yaml"), &yaml)?;
    if let Some(retrieval) = &models.retrieval {
        config.retrieval = retrieval.clone();
    }
    let mut result = serde_json::Map::new();
    for rerank_when_busy in [false, true] {
        if rerank_when_busy && config.most_llm_candidates() == 0 {
            break;
        }
        config.line.rerank_when_busy = rerank_when_busy;
        let figures = load_run(models, &config, &store, questions).await?;
        result.insert(format!("rerank_when_busy_{rerank_when_busy}"), figures);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Value::Object(result))
}

/// Questions a reader of the sample text might ask.
const LOAD_QUESTIONS: [&str; 6] = [
    "How do honeybees tell each other where the flowers are?",
    "What does the queen bee do?",
    "What is the waggle dance?",
    "How many bees live in a colony?",
    "What do worker bees collect?",
    "How do bees make honey?",
];

async fn load_run(
    models: &LoadModels,
    config: &crate::config::Config,
    store: &KbStore,
    questions: usize,
) -> anyhow::Result<Value> {
    let answering = crate::app::Answering {
        pipeline: models.pipeline.clone(),
        store: store.clone(),
        plugins: models.plugins.clone(),
        config: Arc::new(config.clone()),
        // English questions: whatever the models speak, nothing changes.
        languages: ModelLanguages::default(),
    };
    let router = Arc::new(crate::question::router::Router::new(config, answering, None)?);
    if let Some(generator) = &models.local {
        generator.forget_cached_prompts();
    }
    let started = Instant::now();
    let sinks: Vec<TimedSink> = (0..questions).map(|_| TimedSink::new(started)).collect();
    let asked: Vec<_> = sinks
        .iter()
        .enumerate()
        .map(|(i, sink)| {
            tokio::spawn(router.handle(lore_core::Incoming {
                bot: "load".into(),
                conversation: lore_core::ConversationKey(format!("bench:{i}")),
                channel: format!("bench:{i}"),
                parent_channel: None,
                private: true,
                author: lore_core::Author { id: format!("person{i}"), name: format!("person {i}"), roles: vec![] },
                text: LOAD_QUESTIONS[i % LOAD_QUESTIONS.len()].into(),
                command: None,
                reply: Box::new(sink.clone()),
            }))
        })
        .collect();
    futures::future::try_join_all(asked).await?;
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let ttft: Vec<f64> = sinks.iter().filter_map(TimedSink::first_word_ms).collect();
    let answered = sinks.iter().filter(|s| s.finished()).count();
    let words: usize = sinks.iter().map(TimedSink::words).sum();
    Ok(json!({
        "questions": questions,
        "answered": answered,
        "questions_per_min": answered as f64 / minutes,
        "ttft_ms_p50": percentile(&ttft, 50.0),
        "ttft_ms_p95": percentile(&ttft, 95.0),
        "words_per_answer": words as f64 / answered.max(1) as f64,
    }))
}

/// What a [`TimedSink`] saw of its answer.
#[derive(Default)]
struct Seen {
    first_word: Option<std::time::Duration>,
    finished: bool,
    /// Words of the final answer: answers of different lengths are different work.
    words: usize,
}

/// Records when an answer showed its first word, whether it finished, and how long it was.
#[derive(Clone)]
struct TimedSink {
    started: Instant,
    // A std Mutex: held for a field update, never across an await.
    seen: Arc<std::sync::Mutex<Seen>>,
}

impl TimedSink {
    fn new(started: Instant) -> Self {
        Self { started, seen: Arc::default() }
    }

    fn first_word_ms(&self) -> Option<f64> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).first_word.map(|d| d.as_secs_f64() * 1e3)
    }

    fn finished(&self) -> bool {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).finished
    }

    fn words(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).words
    }

    fn mark(&self, text: &str, done: bool) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if !text.starts_with("(waiting") && seen.first_word.is_none() {
            seen.first_word = Some(self.started.elapsed());
        }
        if done {
            seen.finished = true;
            seen.words = text.split_whitespace().count();
        }
    }
}

#[async_trait::async_trait]
impl lore_core::ReplySink for TimedSink {
    async fn typing(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    async fn update(&mut self, text: &str) -> anyhow::Result<()> {
        self.mark(text, false);
        Ok(())
    }
    async fn finish(&mut self, text: &str, _: &[lore_core::SourceRef]) -> anyhow::Result<()> {
        self.mark(text, true);
        Ok(())
    }
    async fn say(&mut self, text: &str) -> anyhow::Result<()> {
        // A refusal or an error: not an answer.
        tracing::warn!(text, "load test: a question was not answered");
        Ok(())
    }
}

/// What the benchmarks' retrievers and rerankers use: the loaded models, no cross-encoder.
fn plugins(generator: &Generator, embedder: &LlamaEmbedder) -> lore_core::PluginContext {
    lore_core::PluginContext {
        embedder: Arc::new(embedder.clone()),
        scorer: Some(Arc::new(generator.clone())),
        cross_encoder: None,
    }
}

/// Retrieval on a synthetic knowledge base of `--kb-chunks` chunks, and time to first
/// token through the pipeline.
struct RetrievalTest {
    /// Chunks in the synthetic knowledge base.
    chunks: usize,
}

#[async_trait::async_trait]
impl ExtraTest for RetrievalTest {
    fn key(&self) -> &'static str {
        "ttft"
    }

    fn title(&self) -> &'static str {
        "retrieval and time to first token"
    }

    async fn run(&self, _: &EngineArgs, generator: &Generator, embedder: &LlamaEmbedder) -> anyhow::Result<Value> {
        ttft_test(generator, embedder, self.chunks).await
    }

    fn rows(&self, result: &Value) -> Vec<Row> {
        let mut rows = Vec::new();
        for (name, t) in result.as_object().into_iter().flatten() {
            rows.push(Row::new(format!("time to first token, {name} (ms p50)"), number(&t["ttft_ms_p50"])));
            let retrieval = format!("  retrieval on {} chunks (ms p50)", t["chunks"]);
            let share = number(&t["retrieval_share_p50"]);
            rows.push(Row::new(retrieval, number(&t["retrieval_ms_p50"])).ratio(Some(share)).target("<=25ms"));
            let embedding = number(&t["question_embedding_ms_p50"]);
            rows.push(Row::new("    of which embedding the question (ms p50)", embedding));
        }
        rows
    }
}

async fn ttft_test(generator: &Generator, embedder: &LlamaEmbedder, n_chunks: usize) -> anyhow::Result<Value> {
    let dir = tempdir()?;
    let store = KbStore::open(&dir).await?;
    let kb = store.open_or_create("bench", embedder.dim()).await?;
    let handle = lore_knowledge::KbHandle::new(store.clone(), "bench")?;
    let mut rng = SplitMix(7);
    let rows: Vec<(Chunk, Vec<f32>)> = (0..n_chunks)
        .map(|i| {
            let text = synthetic_sentence(&mut rng, 60);
            let mut v: Vec<f32> = (0..embedder.dim()).map(|_| rng.next_f32() - 0.5).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            (Chunk::new(&format!("doc{}.txt", i / 100), (i % 100) as u32, 1, 1, text), v)
        })
        .collect();
    let sources: Vec<String> =
        rows.iter().map(|(c, _)| c.source.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    kb.replace_sources(&rows, &sources).await?;
    let plugins = plugins(generator, embedder);
    let pipeline = Pipeline {
        model: Arc::new(generator.clone()),
        max_answer_tokens: 32,
        sampling: Sampling { temperature: 0.0, ..Sampling::default() },
        evidence: EvidenceFinder::new(&plugins),
    };
    let mut result = serde_json::Map::new();
    for retriever in [RetrieverConfig::Vector, RetrieverConfig::default()] {
        // Search only: the `llm` reranker is generation work and is measured as such.
        let retrieval = Retrieval {
            retriever: retriever.clone(),
            rerankers: vec![],
            min_score: -1.0,
            passages: 4,
            top_k: 8,
            ..Retrieval::default()
        };
        let chain = Chain::build(handle.clone(), retrieval, Template::default(), &plugins, &ModelLanguages::default())?;
        let mut retrieval_ms = Vec::new();
        let mut embed_ms = Vec::new();
        let mut ttft_ms = Vec::new();
        for q in 0..21 {
            let question = synthetic_sentence(&mut rng, 12);
            // The question's embedding alone: the part of retrieval that is model work.
            let t = Instant::now();
            embedder.embed(std::slice::from_ref(&question)).await?;
            embed_ms.push(t.elapsed().as_secs_f64() * 1e3);
            let started = Instant::now();
            let answer = pipeline.prepare(&chain, &question, &[]).await?;
            let Answer::Generate { mut generation, retrieval_time, .. } = answer else {
                anyhow::bail!("bench question abstained");
            };
            while let Some(e) = generation.events.recv().await {
                if matches!(e, Event::Text(_) | Event::Done(_) | Event::Failed(_)) {
                    break;
                }
            }
            if q == 0 {
                continue; // warm-up
            }
            ttft_ms.push(started.elapsed().as_secs_f64() * 1e3);
            retrieval_ms.push(retrieval_time.as_secs_f64() * 1e3);
        }
        result.insert(
            retriever.name().into(),
            json!({"chunks": n_chunks, "retrieval_ms_p50": percentile(&retrieval_ms, 50.0), "retrieval_ms_p95": percentile(&retrieval_ms, 95.0),
                   "question_embedding_ms_p50": percentile(&embed_ms[1..], 50.0),
                   "ttft_ms_p50": percentile(&ttft_ms, 50.0), "ttft_ms_p95": percentile(&ttft_ms, 95.0),
                   "retrieval_share_p50": percentile(&retrieval_ms, 50.0) / percentile(&ttft_ms, 50.0)}),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Value::Object(result))
}

/// A tiny deterministic generator for synthetic data (no dependency needed for this).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }

    fn next_f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

const WORDS: &[&str] = &[
    "river", "castle", "engine", "garden", "market", "winter", "signal", "harbor", "forest", "copper", "ledger",
    "valley", "pilot", "bridge", "orchard", "lantern", "meadow", "quarry", "beacon", "canal", "fabric", "glacier",
    "island", "jungle", "kettle", "ladder", "mirror", "needle", "oyster", "pepper", "rocket", "saddle", "temple",
    "umbrella", "velvet", "walnut", "anchor", "basket", "candle", "desert", "falcon", "goblet", "hammer", "iceberg",
    "jacket", "kernel", "lemon", "magnet",
];

fn synthetic_sentence(rng: &mut SplitMix, words: usize) -> String {
    (0..words).map(|_| WORDS[(rng.next() % WORDS.len() as u64) as usize]).collect::<Vec<_>>().join(" ") + "."
}

/// The cost of generating through a remote engine: the same model answers the same
/// prompts in this process and through Lore's own HTTP API (started here on loopback, as a
/// second Lore serving as the engine would be), reached through `lore-remote` as any pool
/// is. Greedy answers, so both ways produce the same text.
struct HttpHopTest;

#[async_trait::async_trait]
impl ExtraTest for HttpHopTest {
    fn key(&self) -> &'static str {
        "http_hop"
    }

    fn title(&self) -> &'static str {
        "the HTTP hop to a remote engine"
    }

    async fn run(&self, args: &EngineArgs, generator: &Generator, embedder: &LlamaEmbedder) -> anyhow::Result<Value> {
        let dir = tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let yaml = format!(
            "models:\n  generator:\n    path: {gen}\n    parallel: {parallel}\n  embedder:\n    path: embedder.gguf\n\
             retrieval:\n  rerankers: []\nserver:\n  listen: 127.0.0.1:{port}\nline:\n  per_user_in_flight: {parallel}\n",
            gen = generator.path().display(),
            parallel = generator.parallel(),
        );
        let config = crate::config::Config::parse(std::path::Path::new("bench.yaml"), &yaml)?;
        let store = KbStore::open(&dir).await?;
        let plugins = plugins(generator, embedder);
        let answering = crate::app::Answering {
            pipeline: Pipeline {
                model: Arc::new(generator.clone()),
                max_answer_tokens: 64,
                sampling: Sampling::greedy(),
                evidence: EvidenceFinder::new(&plugins),
            },
            store: store.clone(),
            plugins,
            config: Arc::new(config.clone()),
            languages: ModelLanguages::default(),
        };
        let router = Arc::new(crate::question::router::Router::new(&config, answering, None)?);
        let app = Arc::new(crate::app::App {
            config: config.clone(),
            store,
            embedder: Arc::new(embedder.clone()),
            local_embedder: Some(embedder.clone()),
            remote_embedder: None,
            local_generator: Some(generator.clone()),
            remote_generator: None,
            cross_encoder: None,
            languages: ModelLanguages::default(),
        });
        let stop = tokio_util::sync::CancellationToken::new();
        let server = config.server.as_ref().expect("configured above");
        let http = crate::service::http::start(server, app, router, Default::default(), stop.clone()).await?;
        let remote = lore_remote::RemoteGenerator::new(lore_remote::RemoteGeneratorSettings {
            pool: lore_remote::PoolSettings {
                endpoints: vec![format!("http://127.0.0.1:{port}/v1")],
                api_key: None,
                max_in_flight: generator.parallel(),
                health_interval: std::time::Duration::from_secs(5),
                timeout: std::time::Duration::from_secs(120),
                request_deadline: std::time::Duration::from_secs(600),
            },
            model: config.models.generator.name(),
            chat: false,
            context_tokens: lore_core::ChatModel::context_tokens(generator),
            tokenizer: None,
        })?;
        let mut result = serde_json::Map::new();
        for at_once in [1, generator.parallel()] {
            let local = hop_run(generator, generator, at_once, args.reps, args.n_gen).await?;
            let hop = hop_run(generator, &remote, at_once, args.reps, args.n_gen).await?;
            let ratio = |key: &str| hop[key].as_f64().unwrap_or(f64::NAN) / local[key].as_f64().unwrap_or(f64::NAN);
            let ratios = json!({"ttft": ratio("ttft_ms_p50"), "tps": ratio("tokens_per_s")});
            result.insert(at_once.to_string(), json!({"in_process": local, "http": hop, "http_vs_in_process": ratios}));
        }
        stop.cancel();
        let _ = http.await;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(Value::Object(result))
    }

    fn rows(&self, result: &Value) -> Vec<Row> {
        let mut rows = Vec::new();
        for (at_once, h) in result.as_object().into_iter().flatten() {
            let (local, http) = (&h["in_process"], &h["http"]);
            // No ratio when an answer had no tokens to time (a model that stops at once).
            let ratio = |key: &str| Some(number(&h["http_vs_in_process"][key])).filter(|r| r.is_finite());
            let name = format!("via HTTP, {at_once} at once: first token (ms p50)");
            let first_token = number(&http["ttft_ms_p50"]);
            rows.push(Row::new(name, first_token).reference(Some(number(&local["ttft_ms_p50"]))).ratio(ratio("ttft")));
            let per_answer = number(&http["tokens_per_s"]);
            let name = "  tok/s per answer (reference: in-process)";
            rows.push(Row::new(name, per_answer).reference(Some(number(&local["tokens_per_s"]))).ratio(ratio("tps")));
        }
        rows
    }
}

/// `at_once` answers of up to `n_gen` tokens from `model`, `reps` times, each from an
/// empty prompt cache: time to first token and tokens per second per answer (the tokens
/// counted with the local model's tokenizer, so both ways count alike).
async fn hop_run(
    local: &Generator,
    model: &dyn lore_core::ChatModel,
    at_once: usize,
    reps: usize,
    n_gen: usize,
) -> anyhow::Result<Value> {
    let count = |text: &str, _: usize| local.count_text_tokens(text).saturating_sub(1);
    timed_answers(model, at_once, reps, n_gen, &|| local.forget_cached_prompts(), &count).await
}

/// Time to first token and tokens per second per answer of `at_once` answers at a time,
/// `reps` rounds; `before_round` runs before each, `tokens` counts an answer's tokens from
/// its text and the pieces it came in.
async fn timed_answers(
    model: &dyn lore_core::ChatModel,
    at_once: usize,
    reps: usize,
    n_gen: usize,
    before_round: &(dyn Fn() + Sync),
    tokens: &(dyn Fn(&str, usize) -> usize + Sync),
) -> anyhow::Result<Value> {
    let (mut ttft, mut tps) = (Vec::new(), Vec::new());
    for rep in 0..reps.max(1) {
        before_round();
        let answers = (0..at_once).map(|i| async move {
            let prompt = format!("Story {rep}-{i}. Once upon a time, in a quiet village by the sea, there lived");
            let request = lore_core::GenerateRequest {
                prompt: prompt.as_str().into(),
                max_tokens: n_gen,
                stop: vec![],
                ignore_eos: false,
                sampling: Sampling::greedy(),
                lora: None,
            };
            let started = Instant::now();
            let mut generation = model.generate(request)?;
            let (mut first, mut text, mut pieces) = (None, String::new(), 0);
            while let Some(event) = generation.events.recv().await {
                match event {
                    Event::Text(piece) => {
                        first.get_or_insert_with(|| started.elapsed());
                        text.push_str(&piece);
                        pieces += 1;
                    }
                    Event::Done(_) => break,
                    Event::Failed(e) => anyhow::bail!("generation failed: {e}"),
                    Event::Queued { .. } => {}
                }
            }
            let first = first.unwrap_or_else(|| started.elapsed());
            Ok((first.as_secs_f64() * 1e3, tokens(&text, pieces) as f64 / started.elapsed().as_secs_f64()))
        });
        for (first_ms, per_s) in futures::future::try_join_all(answers).await? {
            ttft.push(first_ms);
            tps.push(per_s);
        }
    }
    Ok(json!({
        "ttft_ms_p50": percentile(&ttft, 50.0),
        "tokens_per_s": tps.iter().sum::<f64>() / tps.len().max(1) as f64,
    }))
}

/// `lore bench` on a pool of servers (`models.generator.type: openai`): time to first
/// token and tokens per second per answer, one at a time and `parallel` at once. Tokens
/// are the stream's pieces (a token each on vLLM, llama.cpp's server and Lore).
pub async fn run_pool(app: &crate::app::App, args: &EngineArgs) -> anyhow::Result<()> {
    let pool = app.remote_generator.as_ref().expect("loaded with Load::All for a pool");
    let mut result = serde_json::Map::new();
    let crate::config::GeneratorSettings::Openai(settings) = &app.config.models.generator else {
        anyhow::bail!("`lore bench` measures a pool of servers when models.generator has `type: openai`");
    };
    for at_once in [1, settings.parallel] {
        let figures = timed_answers(pool, at_once, args.reps, args.n_gen, &|| {}, &|_, pieces| pieces).await?;
        result.insert(at_once.to_string(), figures);
    }
    let out = json!({"model": settings.model, "endpoints": settings.endpoints, "pool": result});
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("model {} on {}", settings.model, settings.endpoints.join(", "));
    println!("{:<44} {:>12} {:>12}", "answers at once", "first token", "tok/s each");
    for (at_once, f) in &result {
        let ms = f["ttft_ms_p50"].as_f64().unwrap_or(f64::NAN);
        let tps = f["tokens_per_s"].as_f64().unwrap_or(f64::NAN);
        println!("{at_once:<44} {:>9.1} ms {tps:>12.1}", ms);
    }
    Ok(())
}
