//! The `lore` command line.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::bail;
use clap::{Parser, Subcommand};
use lore_adapters::console::{ConsoleAdapter, ConsoleSink};
use lore_adapters::Adapter;
use lore_remote::{CountedBy, RemoteError};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::app::{App, Load};
use crate::config::{BotConfig, Config, EmbedderSettings, GeneratorSettings, ModelKind};
use crate::ingest::Progress;
use crate::logs::LogFormat;
use crate::question::pipeline::respond;
use crate::question::prompt::Template;
use crate::question::router::{bot_place, Place, QuestionSpan};
use crate::service::run::AdapterSpec;

#[derive(Debug, Parser)]
#[command(name = "lore", version, about = "Turn your own text into a chat bot that answers questions about it")]
pub struct Cli {
    /// Configuration file [default: $LORE_CONFIG, else ./lore.yaml, else ./config/lore.yaml]
    #[arg(long, global = true, env = "LORE_CONFIG")]
    pub config: Option<PathBuf>,
    /// More log output (-v: debug, -vv: trace, including llama.cpp).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// How log lines are written: `text`, or `json` (one object a line, for log shippers).
    #[arg(long, global = true, env = "LORE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Chunk, embed and store files in a knowledge base.
    Ingest {
        /// Knowledge base; created if it does not exist.
        #[arg(long)]
        kb: String,
        /// Files, folders or web pages (http:// or https://); default: the knowledge
        /// base's `sources` from the config.
        sources: Vec<String>,
        /// With web pages: also fetch the pages below each on its host (its sitemap's,
        /// else those its links lead to), as the knowledge base's `crawl: true` does.
        #[arg(long)]
        crawl: bool,
        /// Pages fetched at most per web page given [default: the knowledge base's
        /// `max_pages`, 500].
        #[arg(long)]
        max_pages: Option<usize>,
        /// With web pages: let the crawler connect to loopback, private and link-local
        /// addresses (an intranet site), as the knowledge base's
        /// `allow_private_addresses: true` does.
        #[arg(long)]
        allow_private: bool,
    },
    /// Answer one question, streamed to stdout, with sources.
    Ask {
        #[arg(long, conflicts_with = "kb", required_unless_present = "kb")]
        bot: Option<String>,
        #[arg(long)]
        kb: Option<String>,
        question: String,
    },
    /// A conversation on the console.
    Chat {
        #[arg(long, conflicts_with = "kb", required_unless_present = "kb")]
        bot: Option<String>,
        #[arg(long)]
        kb: Option<String>,
    },
    /// Run every configured bot until Ctrl-C or SIGTERM.
    Run,
    /// Run only the HTTP server (`server:` in the config), no bots.
    Serve,
    /// Check the configuration, models and knowledge bases, then exit.
    Check,
    /// Score retrieval and answers on a SQuAD 2.0 file.
    Eval(crate::tools::eval::EvalArgs),
    /// Fit a bot's answer confidence on labelled questions and write the calibration
    /// `retrieval.abstain.calibration` names.
    Calibrate(crate::tools::calibrate::CalibrateArgs),
    /// A bot's gold cases (made with `/correct`): export them for `lore eval --gold`, or
    /// import a gold file.
    Gold(crate::tools::gold::GoldArgs),
    /// Write question/answer pairs from a knowledge base, for fine-tuning (JSONL).
    Synth(crate::tools::synth::SynthArgs),
    /// Measure speed (optionally against the llama.cpp reference program).
    Bench(crate::tools::bench::BenchArgs),
    /// Parse one document from stdin into JSON on stdout, under resource limits: how
    /// ingest reads documents, each in a child process of its own.
    #[command(name = "parse-document", hide = true)]
    ParseDocument(crate::ingest::sandbox::ParseArgs),
}

pub fn main() -> anyhow::Result<()> {
    crate::ingest::sandbox::this_program_parses();
    let cli = Cli::parse();
    if let Command::ParseDocument(args) = &cli.command {
        // A child reading one document: no logging, no runtime, no config.
        return crate::ingest::sandbox::parse_document(args);
    }
    crate::logs::init(cli.verbose, cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(cli))
}

pub fn config_path(explicit: Option<PathBuf>) -> PathBuf {
    explicit.unwrap_or_else(|| {
        let local = PathBuf::from("lore.yaml");
        if local.exists() {
            local
        } else {
            PathBuf::from("config/lore.yaml")
        }
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Bench(args) = &cli.command {
        if let (Some(m), Some(e), false) = (&args.engine.model, &args.engine.embedder, args.load_only) {
            return crate::tools::bench::run(args.clone(), m.clone(), e.clone()).await;
        }
    }
    let config = Config::load(&config_path(cli.config))?;
    match cli.command {
        Command::Ingest { kb, sources, crawl, max_pages, allow_private } => {
            ingest(config, &kb, sources, crawl, max_pages, allow_private).await
        }
        Command::Ask { bot, kb, question } => ask(config, bot.as_deref(), kb.as_deref(), &question).await,
        Command::Chat { bot, kb } => chat(config, bot.as_deref(), kb.as_deref()).await,
        Command::Run => run_daemon(config).await,
        Command::Serve => serve(config).await,
        Command::Check => check(config).await,
        Command::Eval(args) => {
            if args.adapter.is_some() {
                if args.retrieval_only {
                    bail!("--adapter changes answers, and --retrieval-only generates none: leave one out");
                }
                if config.models.generator.kind() != ModelKind::Llama {
                    bail!("--adapter applies to a local generator (type: llama); a server serves an adapter as a model of its own: name that model in the config");
                }
            }
            let llm_rerank = !args.no_rerank
                && !args.closed_book
                && config.retrieval.rerankers.iter().any(|r| matches!(r, lore_knowledge::RerankerConfig::Llm { .. }));
            let asks = args.squad.is_some() || !args.gold.is_empty();
            let generates = asks && (!args.retrieval_only || llm_rerank || args.generated_questions > 0);
            let models = if generates { Load::All } else { Load::WithoutGenerator };
            let app = App::load_with_adapters(config, models, args.adapter.as_slice()).await?;
            let metrics = crate::tools::eval::run(&app, &args).await?;
            if args.json {
                println!("{}", serde_json::to_string(&metrics)?);
            } else if !args.gold.is_empty() {
                crate::tools::gold::print_gold_report(&metrics);
            } else {
                crate::tools::eval::print_table(&metrics);
            }
            match &args.baseline {
                Some(baseline) => crate::tools::gold::check_baseline(&metrics, baseline, args.max_drop),
                None => Ok(()),
            }
        }
        Command::Calibrate(args) => {
            // Questions read back from files need no model; asking needs them all.
            let asks = !args.squad.is_empty() || !args.gold.is_empty();
            let app = App::load(config, if asks { Load::All } else { Load::WithoutGenerator }).await?;
            let report = crate::tools::calibrate::run(&app, &args).await?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                crate::tools::calibrate::print_report(&report);
            }
            Ok(())
        }
        Command::Gold(args) => crate::tools::gold::run(&config, &args).await,
        Command::Synth(args) => {
            let app = App::load(config, Load::All).await?;
            let report = crate::tools::synth::run(&app, &args, true).await?;
            println!("{}: {report}", args.out.display());
            Ok(())
        }
        Command::ParseDocument(_) => unreachable!("handled before the runtime starts"),
        Command::Bench(args) if args.load_only => {
            let app = App::load(config, Load::All).await?;
            crate::tools::bench::run_load(&app, &args).await
        }
        Command::Bench(args) => {
            let m = &config.models;
            let generator = match &m.generator {
                GeneratorSettings::Llama(local) => local.path.clone(),
                GeneratorSettings::Openai(_) => {
                    let app = App::load(config, Load::All).await?;
                    return crate::tools::bench::run_pool(&app, &args.engine).await;
                }
            };
            let EmbedderSettings::Llama(embedder) = &m.embedder else {
                bail!("`lore bench` measures the embedder in-process: give it a local embedder (--embedder FILE.gguf)");
            };
            crate::tools::bench::run(args, generator, embedder.path.clone()).await
        }
    }
}

async fn ingest(
    config: Config,
    kb_name: &str,
    sources: Vec<String>,
    crawl: bool,
    max_pages: Option<usize>,
    allow_private: bool,
) -> anyhow::Result<()> {
    if !crate::config::valid_kb_name(kb_name) {
        bail!("knowledge base name {kb_name:?} is not valid: use letters, digits, '-' and '_'");
    }
    let (paths, pages): (Vec<PathBuf>, Vec<String>) = if sources.is_empty() {
        match config.knowledge_bases.get(kb_name) {
            Some(kb) if !kb.sources.is_empty() || !kb.web_sources.is_empty() => {
                (kb.sources.clone(), kb.web_sources.clone())
            }
            _ => bail!("no files given, and {} lists no sources for knowledge base {kb_name:?}", config.file.display()),
        }
    } else {
        let (pages, paths): (Vec<String>, Vec<String>) = sources.into_iter().partition(|s| crate::config::is_url(s));
        (paths.into_iter().map(PathBuf::from).collect(), pages)
    };
    let pages: Vec<url::Url> =
        pages.iter().map(|p| crate::config::parse_url(p)).collect::<Result<_, _>>().map_err(anyhow::Error::msg)?;
    let mut settings = crate::ingest::Settings::for_kb(&config, kb_name);
    settings.web.crawl |= crawl;
    settings.web.guard.allow_private |= allow_private;
    if let Some(max) = max_pages {
        settings.web.max_pages = max;
    }
    let models = if settings.generated_questions > 0 { Load::All } else { Load::WithoutGenerator };
    let app = App::load(config, models).await?;
    let kb = app.kb_for_ingest(kb_name).await?;
    let embedder = app.embedder.as_ref();
    if !paths.is_empty() {
        let report = crate::ingest::ingest(&kb, embedder, &paths, &settings, Progress::Bar).await?;
        println!("{kb_name}: {report}; {} chunks stored", kb.count().await?);
    }
    if !pages.is_empty() {
        let report = crate::ingest::ingest_web(&kb, embedder, &pages, &settings, Progress::Bar).await?;
        println!("{kb_name}: {report}; {} chunks stored", kb.count().await?);
    }
    let report = app.refresh_questions(&kb, settings.generated_questions, Progress::Bar).await?;
    if report.chunks_asked > 0 || report.dropped {
        println!("{kb_name}: {report}");
    }
    Ok(())
}

async fn ask(config: Config, bot: Option<&str>, kb: Option<&str>, question: &str) -> anyhow::Result<()> {
    let place = match (bot, kb) {
        (Some(bot), _) => bot_place(&config, bot)?,
        (None, Some(kb)) => Place {
            kb: kb.to_string(),
            retrieval: config.retrieval.clone(),
            template: Template::default(),
            lora: None,
            language: config.kb_language(kb),
        },
        (None, None) => bail!("name a --bot or a --kb"),
    };
    let name = bot.or(kb).unwrap_or_default().to_string();
    let app = App::load(config, Load::All).await?;
    let chain = app.chain(place)?;
    // One question, in its span as a chat's is (see `Router::handle`).
    let traced = QuestionSpan::new(&name, "console", "ask");
    let answering = async {
        let answer = app.pipeline().prepare(&chain, question, &[]).await?;
        respond(answer, &mut ConsoleSink::stdout()).await
    };
    answering.instrument(traced.span).await?;
    Ok(())
}

async fn chat(mut config: Config, bot: Option<&str>, kb: Option<&str>) -> anyhow::Result<()> {
    let name = match (bot, kb) {
        (Some(bot), _) => {
            config.bot(bot)?;
            bot.to_string()
        }
        (None, Some(kb)) => {
            // An ad-hoc console bot on this knowledge base, with default settings.
            let name = format!("console-{kb}");
            config.bots.insert(name.clone(), BotConfig::console(kb));
            name
        }
        (None, None) => bail!("name a --bot or a --kb"),
    };
    let app = Arc::new(App::load(config, Load::All).await?);
    eprintln!("Ask {name} anything (/help for commands, /quit or Ctrl-D to leave).");
    let bot = name.clone();
    let console = AdapterSpec::new(&name, move || Ok(Box::new(ConsoleAdapter::new(&bot)) as Box<dyn Adapter>));
    run_adapters(app, vec![console]).await
}

/// `lore serve`: the HTTP API alone, no chat adapters.
async fn serve(config: Config) -> anyhow::Result<()> {
    if config.server.is_none() {
        bail!(
            "{}: `lore serve` needs a `server:` section (for example `server: {{listen: 127.0.0.1:8080}}`)",
            config.file.display()
        );
    }
    let app = Arc::new(App::load(config, Load::All).await?);
    let _watchers = crate::service::watch::start(&app)?;
    run_adapters(app, Vec::new()).await
}

/// `lore run`: every bot's adapter and the HTTP API (when configured).
async fn run_daemon(config: Config) -> anyhow::Result<()> {
    let app = Arc::new(App::load(config, Load::All).await?);
    let adapters = crate::service::run::adapter_specs(&app.config)?;
    let _watchers = crate::service::watch::start(&app)?;
    run_adapters(app, adapters).await
}

/// Runs the adapters and the router until a shutdown signal arrives (or every adapter
/// ends), then lets answers in progress finish.
async fn run_adapters(app: Arc<App>, adapters: Vec<AdapterSpec>) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let signal = {
        let token = shutdown.clone();
        tokio::spawn(async move {
            crate::service::run::shutdown_signal().await;
            tracing::info!("shutting down");
            token.cancel();
        })
    };
    let result = crate::service::run::run_until(app, adapters, shutdown).await;
    signal.abort();
    result
}

/// Prints each endpoint's state; returns how many do not answer.
fn print_endpoints(checks: Vec<(String, Result<(), RemoteError>)>) -> usize {
    let mut down = 0;
    for (url, result) in checks {
        match result {
            Ok(()) => println!("  {url}: answers"),
            Err(why) => {
                down += 1;
                println!("  {url}: does not answer: {why}");
            }
        }
    }
    down
}

fn counted_by(by: CountedBy) -> &'static str {
    match by {
        CountedBy::TokenizerFile => "the tokenizer file",
        CountedBy::Server => "the servers' /tokenize",
        CountedBy::Estimate => {
            "estimate (3 bytes a token: the servers have no /tokenize; name a `tokenizer` file for exact counts)"
        }
    }
}

/// `lore check`: loads everything as `lore run` would and says what it found, counting
/// the problems (an unreachable server, a missing knowledge base) before failing.
async fn check(config: Config) -> anyhow::Result<()> {
    println!("config {}: ok", config.file.display());
    let app = App::load(config, Load::All).await?;
    let mut problems = check_generator(&app).await;
    problems += check_embedder(&app).await;
    println!("devices: {}", lore_engine::devices().join(", "));
    println!(
        "knowledge bases in {}, conversations in {}",
        app.config.data_dir,
        app.config.conversations_dir().display()
    );
    check_calibrations(&app)?;
    problems += check_knowledge_bases(&app).await?;
    if problems > 0 {
        bail!("{problems} problem(s) found");
    }
    println!("all good");
    Ok(())
}

/// The generator: the model file and what it can do, or the pool's servers. Returns the
/// problems found.
async fn check_generator(app: &App) -> usize {
    let mut problems = 0;
    match (&app.local_generator, &app.remote_generator) {
        (Some(g), _) => {
            println!(
                "generator {}: {}{} (chat template: {}), {} tokens per conversation, {} in parallel",
                g.path().display(),
                g.architecture(),
                if g.is_encoder_decoder() {
                    ", text-to-text (encoder-decoder, one conversation at a time)"
                } else {
                    ""
                },
                if g.has_chat_template() { "yes" } else { "no, using prompts/plain.txt" },
                lore_core::ChatModel::context_tokens(g),
                g.parallel()
            );
            println!("  languages: {}", app.languages.generator.describe("models.generator"));
            for (name, bot) in &app.config.bots {
                for lora in &bot.adapters {
                    println!(
                        "bot {name}: LoRA adapter {} at scale {}: fits the generator",
                        lora.path.display(),
                        lora.scale
                    );
                }
            }
        }
        (None, Some(pool)) => {
            let GeneratorSettings::Openai(g) = &app.config.models.generator else {
                unreachable!("a pool is connected for `type: openai` only")
            };
            let api = match g.api {
                crate::config::RemoteApi::Chat => "chat completions: the servers apply the chat template",
                crate::config::RemoteApi::Completions => "plain completions of prompts/plain.txt",
            };
            println!(
                "generator {} on {} server(s) ({api}), {} tokens per conversation (configured)",
                g.model,
                g.endpoints.len(),
                g.context_tokens
            );
            problems += print_endpoints(pool.check_endpoints().await);
            lore_core::ChatModel::count_tokens(pool, "How many tokens is this?").await;
            println!("  prompt tokens counted by {}", counted_by(pool.counted_by()));
            println!("  languages: {}", app.languages.generator.describe("models.generator"));
            if app.config.most_llm_candidates() > 0 {
                match pool.check_scoring().await {
                    Ok(()) => println!("  the llm reranker: the servers return prompt log-probabilities"),
                    Err(why) => {
                        problems += 1;
                        println!("  {}", crate::app::llm_reranker_cannot(&why));
                    }
                }
            }
        }
        (None, None) => unreachable!("loaded with Load::All"),
    }
    problems
}

/// The embedder: its dimensions, and a pool's servers. Returns the problems found.
async fn check_embedder(app: &App) -> usize {
    let mut problems = 0;
    match (&app.config.models.embedder, &app.remote_embedder) {
        (EmbedderSettings::Llama(e), _) => println!("embedder {}: {} dimensions", e.path.display(), app.embedder.dim()),
        (EmbedderSettings::Openai(_), None) => unreachable!("a pool is connected for `type: openai`"),
        (EmbedderSettings::Openai(e), Some(pool)) => {
            println!("embedder {} on {} server(s): {} dimensions", e.model, e.endpoints.len(), app.embedder.dim());
            problems += print_endpoints(pool.check_endpoints().await);
            println!("  chunk tokens counted by {}", counted_by(pool.counted_by()));
        }
    }
    println!("  languages: {}", app.languages.embedder.describe("models.embedder"));
    problems
}

/// How each bot decides to abstain, and whether its calibration was fitted on what it
/// runs now.
fn check_calibrations(app: &App) -> anyhow::Result<()> {
    for name in app.config.bots.keys() {
        let place = crate::question::router::bot_place(&app.config, name)?;
        match &place.retrieval.abstain.calibration {
            None => println!(
                "bot {name}: declines below a cosine similarity of {} (no calibration)",
                place.retrieval.min_score
            ),
            Some(file) => {
                let calibration = crate::question::confidence::Calibration::load(file)?;
                println!(
                    "bot {name}: answers judged by calibration {} (fitted on {})",
                    file.display(),
                    calibration.fitted_with.data.join("; ")
                );
                for difference in crate::tools::calibrate::differences(&calibration, &app.config, &place) {
                    println!("  warning: {difference}: refit it with `lore calibrate --bot {name}`");
                }
            }
        }
    }
    Ok(())
}

/// What a bot answering in `language` does about models that do not speak it.
fn language_notes(app: &App, bot: &str, language: lore_knowledge::Language) -> Vec<String> {
    let name = language.name();
    let mut notes = vec![format!("in {name}")];
    let languages = &app.languages;
    if !languages.generator.speaks(language) {
        notes.push(format!(
            "the generator does not speak {name} ({}): answers quote the passage that answers (answer_style: quote) and the llm reranker is left out; a generator that speaks {name} answers in words",
            languages.generator.describe("models.generator")
        ));
    }
    if !languages.embedder.speaks(language) {
        let retriever = crate::question::router::bot_place(&app.config, bot).map(|p| p.retrieval.retriever);
        let what = match retriever {
            Ok(lore_knowledge::RetrieverConfig::Vector) => {
                "warning: its retriever is `vector` alone, whose rankings mean little here: use `hybrid` or `fulltext`"
                    .to_string()
            }
            Ok(lore_knowledge::RetrieverConfig::Hybrid { .. }) => {
                "hybrid retrieval leans on full text (its words order the passages; vector search fills the places it leaves empty)".to_string()
            }
            _ => "it is searched by words".to_string(),
        };
        notes.push(format!(
            "the embedder does not speak {name} ({}): {what}",
            languages.embedder.describe("models.embedder")
        ));
    }
    notes
}

/// Each bot's knowledge bases (its own and its channels'). Returns the missing ones.
async fn check_knowledge_bases(app: &App) -> anyhow::Result<usize> {
    let mut problems = 0;
    for (name, bot) in &app.config.bots {
        let mut kbs = vec![bot.knowledge_base.clone()];
        kbs.extend(bot.channels.values().filter_map(|c| c.knowledge_base.clone()));
        for kb in kbs {
            match app.kb(&kb)?.require().await {
                Ok(k) => {
                    println!("bot {name}: knowledge base {kb}: {} chunks", k.count().await?);
                    // The models read the knowledge base's language, whatever the bot answers in.
                    let stored = k.language().await.ok().flatten();
                    let language = app.config.kb_language(&kb).or(stored).unwrap_or_default();
                    if language != lore_knowledge::Language::English {
                        for line in language_notes(app, name, language) {
                            println!("  {line}");
                        }
                    }
                }
                Err(e) => {
                    problems += 1;
                    println!("bot {name}: knowledge base {kb}: {e}");
                }
            }
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap checks a command line's definition only when it is parsed: a clash (two flags
    /// or two argument groups of one name, as `lore bench` once had) would panic at start.
    #[test]
    fn the_command_line_definition_has_no_clashes() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn the_log_format_is_an_option_of_every_command() {
        let cli = Cli::try_parse_from(["lore", "run", "--log-format", "json"]).unwrap();
        assert_eq!(cli.log_format, LogFormat::Json);
        let cli = Cli::try_parse_from(["lore", "--log-format=text", "check"]).unwrap();
        assert_eq!(cli.log_format, LogFormat::Text);
        assert!(Cli::try_parse_from(["lore", "--log-format", "xml", "check"]).is_err());
    }
}
