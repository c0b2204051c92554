//! `lore eval`: ask every question of a SQuAD 2.0 file through the bots' pipeline and score
//! retrieval (recall@k, MRR of the gold paragraph), answers (official EM / F1) and
//! abstention: by `min_score`, or by a calibration (`lore calibrate`), measured against
//! answering everything in the same run. Off-topic questions (another article's, asked of
//! this one's knowledge base) test that the bot declines what its documents do not cover.
//!
//! Every answer's confidence signals are measured (none is withheld while asking), so any
//! threshold or calibration can be applied afterwards without asking again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use lore_core::{ReplySink, SourceRef};
use lore_knowledge::{KbHandle, KbStore, RetrieverConfig};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::App;
use crate::config::{AnswerStyle, Retrieval};
use crate::ingest::Progress;
use crate::question::answer_text::{clean_answer, normalize_answer, stands_in};
use crate::question::confidence::{Calibration, Signals, Stage};
use crate::question::pipeline::{best_similarity, respond, Chain, Judging, Pipeline};
use crate::question::prompt::Template;
use crate::question::single::{says_dont_know, short_answer};

#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// A SQuAD 2.0 JSON file (official format).
    #[arg(long, required_unless_present_any = ["signals", "gold"])]
    pub squad: Option<PathBuf>,
    /// Score questions asked before instead of asking (`--details` files of earlier
    /// runs): another threshold or calibration on the same answers, at once.
    #[arg(long, conflicts_with = "squad")]
    pub signals: Vec<PathBuf>,
    /// A bot's gold questions (JSON Lines, as `lore calibrate --gold` reads; format in
    /// `tools/gold.rs` and the README), asked through `--bot`'s own chain: exact match and
    /// F1 against their answers, abstention where the answer is `null`, and whether a
    /// named source was among the passages.
    #[arg(long, conflicts_with_all = ["squad", "signals"], requires = "bot")]
    pub gold: Vec<PathBuf>,
    /// An earlier `lore eval --gold --json` report: fail (exit 1) when exact match, F1,
    /// abstention accuracy or citation accuracy dropped by more than `--max-drop`. The
    /// check to run before switching a model, adapter or chunking setting.
    #[arg(long, requires = "gold")]
    pub baseline: Option<PathBuf>,
    /// How far (a share, 0.02 = two points) a figure may fall below `--baseline`'s.
    #[arg(long, default_value_t = 0.02)]
    pub max_drop: f64,
    /// Answer as this bot does: its retrieval settings and prompt (default: the config's
    /// `retrieval` and a short-answer prompt, `prompts/eval-system.txt`).
    #[arg(long)]
    pub bot: Option<String>,
    /// Also ask questions of another SQuAD file (its answerable ones, up to
    /// `--off-topic-limit`) of each article's knowledge base: they should all be declined.
    #[arg(long)]
    pub off_topic: Option<PathBuf>,
    /// At most this many off-topic questions, spread over the file.
    #[arg(long, default_value_t = 100)]
    pub off_topic_limit: usize,
    /// Abstain by this calibration (`lore calibrate`) instead of the config's.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Answer every question: no abstention at all (the baseline "answerable F1 kept" is
    /// measured against; it is also reported beside any abstention).
    #[arg(long)]
    pub no_abstain: bool,
    /// Retriever to use instead of the config's: vector, fulltext or hybrid.
    #[arg(long)]
    pub retriever: Option<String>,
    /// Skip the config's rerankers (retriever order only).
    #[arg(long)]
    pub no_rerank: bool,
    /// Abstention threshold instead of the config's `min_score` (without a calibration).
    #[arg(long)]
    pub min_score: Option<f32>,
    /// Ask the model without passages (for comparison; recall is then the retriever's alone).
    #[arg(long)]
    pub closed_book: bool,
    /// Only retrieval metrics (no generation).
    #[arg(long)]
    pub retrieval_only: bool,
    /// At most this many questions.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Where to write the predictions (official format; "" = abstained).
    #[arg(long, default_value = "predictions.json")]
    pub predictions: PathBuf,
    /// Print the metrics as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also write one JSON line per question (answer, evidence, gold rank, signals) here;
    /// `lore calibrate --signals` fits on such files without asking again.
    #[arg(long)]
    pub details: Option<PathBuf>,
    /// Ingest this document instead of the article's text: a PDF of a one-article SQuAD
    /// file with one paragraph per page (`scripts/squad_pdf.py` writes one), so that
    /// retrieval from PDFs can be compared with retrieval from text. A chunk is then gold
    /// when it is on the gold paragraph's page.
    #[arg(long)]
    pub document: Option<PathBuf>,
    /// Quote the sentence that best supports each answer (`retrieval.quote_evidence`) and
    /// report how often it holds a gold answer.
    #[arg(long)]
    pub quote_evidence: bool,
    /// `generate`, `quote` (the best sentence of the passages is the answer; no
    /// generation) or `verified` (`retrieval.answer_style`).
    #[arg(long, value_enum)]
    pub answer_style: Option<AnswerStyle>,
    /// Questions generated per chunk at ingest as extra search keys
    /// (`generated_questions`, doc2query); the time they took is reported.
    #[arg(long, default_value_t = 0)]
    pub generated_questions: u32,
    /// Answer with this LoRA adapter (a GGUF made for the generator), open or closed book:
    /// compare with the same command without it.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// How strongly `--adapter` applies.
    #[arg(long, default_value_t = 1.0)]
    pub adapter_scale: f32,
    /// Build the articles' knowledge bases in this folder and keep them: a rerun with
    /// other retrieval settings reuses their chunks and generated questions.
    #[arg(long)]
    pub keep: Option<PathBuf>,
}

impl EvalArgs {
    /// The arguments `lore calibrate` asks with: every question answered, everything
    /// measured.
    pub(crate) fn for_calibration(squad: PathBuf, bot: Option<String>, limit: Option<usize>) -> Self {
        Self {
            squad: Some(squad),
            signals: Vec::new(),
            gold: Vec::new(),
            baseline: None,
            max_drop: 0.02,
            bot,
            off_topic: None,
            off_topic_limit: 100,
            calibration: None,
            no_abstain: true,
            retriever: None,
            no_rerank: false,
            min_score: None,
            closed_book: false,
            retrieval_only: false,
            limit,
            predictions: PathBuf::new(),
            json: true,
            details: None,
            document: None,
            quote_evidence: false,
            answer_style: None,
            generated_questions: 0,
            adapter: None,
            adapter_scale: 1.0,
            keep: None,
        }
    }
}

/// Where a question's gold paragraph is in the ingested file.
#[derive(Debug, Clone, Copy)]
struct GoldPlace {
    /// Its first line in the article's text file (one blank line between paragraphs).
    line: u32,
    /// Its page in a `--document` PDF (one paragraph per page).
    page: u32,
}

/// Where a question's answer is, for recall: a SQuAD paragraph, a named source, or
/// nowhere known (off-topic questions, gold questions without a source).
#[derive(Debug, Clone)]
enum Gold {
    Place(GoldPlace),
    /// A passage of this source, covering one of these lines when there are some.
    Source {
        source: String,
        lines: Vec<u32>,
    },
    Unknown,
}

impl Gold {
    fn holds(&self, chunk: &lore_core::Chunk) -> bool {
        match self {
            Gold::Place(place) => place.holds(chunk),
            Gold::Source { source, lines } => {
                chunk.source.ends_with(source.as_str())
                    && (lines.is_empty() || lines.iter().any(|l| (chunk.line_start..=chunk.line_end).contains(l)))
            }
            Gold::Unknown => false,
        }
    }
}

impl GoldPlace {
    fn of_paragraph(i: usize) -> Self {
        Self { line: (2 * i + 1) as u32, page: i as u32 + 1 }
    }

    fn holds(&self, chunk: &lore_core::Chunk) -> bool {
        match chunk.page {
            Some(page) => page == self.page,
            None => chunk.line_start <= self.line && self.line <= chunk.line_end,
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct Squad {
    pub(crate) data: Vec<Article>,
}

#[derive(Deserialize)]
pub(crate) struct Article {
    pub(crate) title: String,
    paragraphs: Vec<Paragraph>,
}

#[derive(Deserialize)]
struct Paragraph {
    context: String,
    qas: Vec<Qa>,
}

#[derive(Deserialize, Clone)]
struct Qa {
    id: String,
    question: String,
    #[serde(default)]
    answers: Vec<AnswerSpan>,
    #[serde(default)]
    is_impossible: bool,
}

#[derive(Deserialize, Clone)]
struct AnswerSpan {
    text: String,
}

/// What a question is, for scoring its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The article answers it.
    Answerable,
    /// Written against the article, which does not answer it (SQuAD 2.0's impossible
    /// questions).
    Unanswerable,
    /// About another article altogether.
    OffTopic,
}

/// One question asked: what the model said and every signal measured while answering,
/// so abstention (by threshold or calibration) is applied afterwards without asking again.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct Asked {
    pub id: String,
    pub question: String,
    pub kind: Kind,
    pub golds: Vec<String>,
    /// 1-based rank of the gold paragraph among the top 20 (None: not found).
    pub gold_rank: Option<usize>,
    /// A gold question's source, when its case names one (`gold_rank` is then that
    /// source's first passage).
    #[serde(default)]
    pub source: Option<String>,
    /// Best similarity among the retrieved passages (None: closed book).
    pub evidence: Option<f32>,
    /// The first passage's score after reranking (the `llm` reranker: the question's mean
    /// log-probability after it).
    pub top_score: Option<f32>,
    /// The cleaned answer ("" when the model itself said it does not know).
    pub answer: String,
    /// The sentence quoted as evidence, or given as the answer.
    pub quote: Option<String>,
    /// Confidence signals (see `confidence.rs`).
    #[serde(default)]
    pub signals: Signals,
    pub latency_ms: f64,
    /// Time spent measuring the answer's signals after generating.
    #[serde(default)]
    pub judge_ms: f64,
}

impl Asked {
    /// Exact match and F1 of `prediction` ("" = abstained), scored as SQuAD 2.0 does.
    fn score(&self, prediction: &str) -> (f64, f64) {
        let golds: Vec<&str> = self.golds.iter().map(String::as_str).collect();
        score(prediction, &golds, self.kind == Kind::Answerable)
    }

    /// Whether the answer, given, would be right: an answerable question whose answer
    /// matches a gold answer (F1 at least 0.5) or holds one word for word. The label
    /// `lore calibrate` fits the confidence to.
    pub fn right(&self) -> bool {
        self.kind == Kind::Answerable
            && !self.answer.is_empty()
            && (self.score(&self.answer).1 >= 0.5 || self.golds.iter().any(|g| stands_in(g, &self.answer)))
    }
}

/// When a question is declined: never, below a similarity, or by a calibration.
#[derive(Clone)]
pub enum Abstention {
    Never,
    MinScore(f32),
    /// By a calibration, and (as the daemon does) never below `floor`, the config's
    /// `min_score`, when one is given.
    Calibrated {
        calibration: Arc<Calibration>,
        threshold: Option<f64>,
        floor: Option<f32>,
    },
}

impl Abstention {
    /// Whether the bot would have declined `a` (saying "I don't know" counts).
    pub fn declines(&self, a: &Asked) -> bool {
        if a.answer.is_empty() {
            return true;
        }
        match self {
            Abstention::Never => false,
            Abstention::MinScore(min) => a.evidence.is_some_and(|e| e < *min),
            Abstention::Calibrated { calibration, threshold, floor } => {
                floor.is_some_and(|min| a.evidence.is_none_or(|e| e < min))
                    || [Stage::Before, Stage::After]
                        .iter()
                        .filter_map(|&stage| calibration.judge(stage, &a.signals, *threshold))
                        .any(|j| j.withholds())
            }
        }
    }

    /// How sure the bot is of `a` (higher: answer): the calibrated probability, or the
    /// similarity `min_score` compares.
    pub fn confidence(&self, a: &Asked) -> f64 {
        match self {
            Abstention::Calibrated { calibration, threshold, .. } => calibration
                .judge(Stage::After, &a.signals, *threshold)
                .or_else(|| calibration.judge(Stage::Before, &a.signals, *threshold))
                .map_or(0.0, |j| j.probability),
            _ => a.evidence.unwrap_or(-1.0) as f64,
        }
    }
}

/// A question scored under one abstention.
#[derive(Debug, Clone)]
pub(crate) struct Scored {
    kind: Kind,
    gold_rank: Option<usize>,
    pub(crate) exact: f64,
    pub(crate) f1: f64,
    pub(crate) abstained: bool,
    latency_ms: f64,
}

pub(crate) fn scored(a: &Asked, abstention: &Abstention) -> Scored {
    let abstained = abstention.declines(a);
    let (exact, f1) = a.score(if abstained { "" } else { &a.answer });
    Scored { kind: a.kind, gold_rank: a.gold_rank, exact, f1, abstained, latency_ms: a.latency_ms }
}

/// Answers are a short phrase; a longer budget only lets the small model ramble.
const EVAL_ANSWER_TOKENS: usize = 48;

/// Abstention thresholds reported by the sweep.
const SWEEP: [f32; 11] = [0.0, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6];

/// Asks every question (up to `--limit`) of the SQuAD file, article by article (and the
/// off-topic ones of each), and returns the metrics; writes the predictions (and
/// `--details`) files.
pub async fn run(app: &App, args: &EvalArgs) -> anyhow::Result<Value> {
    let eval = Evaluation::new(app, args)?;
    if let (false, Some(bot)) = (args.gold.is_empty(), &args.bot) {
        let asked = crate::tools::gold::ask_gold_files(app, &eval, bot, &args.gold).await?;
        let abstention = eval.abstention()?;
        if let Some(file) = &args.details {
            write_details(file, &asked, &abstention)?;
        }
        return Ok(crate::tools::gold::gold_report(&asked, &abstention, eval.passages()));
    }
    let asked = match &args.squad {
        Some(squad) => {
            if let Some(file) = &args.details {
                // Filled as questions are answered, so a long run stopped early keeps them.
                std::fs::write(file, "").with_context(|| format!("cannot write {}", file.display()))?;
            }
            eval.ask_file(squad, args.off_topic.as_deref()).await?
        }
        None => args.signals.iter().map(|f| read_details(f)).collect::<anyhow::Result<Vec<_>>>()?.concat(),
    };
    let abstention = eval.abstention()?;
    eval.write_files(&asked, &abstention)?;
    Ok(eval.report(&asked, &abstention))
}

pub(crate) fn read_squad(file: &Path) -> anyhow::Result<Squad> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}: not a SQuAD 2.0 JSON file", file.display()))
}

/// Up to `limit` answerable questions of `file`, spread over its articles and paragraphs.
fn off_topic_questions(file: &Path, limit: usize) -> anyhow::Result<Vec<Qa>> {
    let squad = read_squad(file)?;
    let all: Vec<Qa> = squad
        .data
        .iter()
        .flat_map(|a| a.paragraphs.iter().flat_map(|p| p.qas.iter()))
        .filter(|qa| !qa.is_impossible && !qa.answers.is_empty())
        .cloned()
        .collect();
    let step = (all.len() as f64 / limit.max(1) as f64).max(1.0);
    Ok((0..limit.min(all.len())).map(|i| all[(i as f64 * step) as usize].clone()).collect())
}

/// One evaluation run's settings, shared by every article.
pub(crate) struct Evaluation<'a> {
    app: &'a App,
    args: &'a EvalArgs,
    retrieval: Retrieval,
    /// `retrieval` without a threshold: every question is answered, and the threshold is
    /// applied when scoring (so it can be swept).
    generate_always: Retrieval,
    template: Template,
    /// `None` with `--retrieval-only`.
    pipeline: Option<Pipeline>,
    /// Questions in flight: as many as the engine decodes together, like a busy bot.
    in_flight: usize,
    /// `--adapter`: the LoRA adapter answers are generated with.
    lora: Option<lore_core::LoraAdapter>,
    /// Seconds spent generating questions at ingest, and for how many chunks.
    question_seconds: std::sync::Mutex<(f64, usize)>,
}

impl<'a> Evaluation<'a> {
    pub(crate) fn new(app: &'a App, args: &'a EvalArgs) -> anyhow::Result<Self> {
        let (mut retrieval, template) = match &args.bot {
            Some(bot) => {
                let place = crate::question::router::bot_place(&app.config, bot)?;
                (place.retrieval, place.template)
            }
            None => (app.config.retrieval.clone(), Template::short_answer()),
        };
        if let Some(r) = &args.retriever {
            retrieval.retriever = match r.as_str() {
                "vector" => RetrieverConfig::Vector,
                "fulltext" => RetrieverConfig::Fulltext,
                "hybrid" => RetrieverConfig::default(),
                other => anyhow::bail!("--retriever {other}: use vector, fulltext or hybrid"),
            };
        }
        if let Some(m) = args.min_score {
            retrieval.min_score = m;
        }
        if let Some(file) = &args.calibration {
            retrieval.abstain.calibration = Some(file.clone());
        }
        retrieval.quote_evidence |= args.quote_evidence;
        if let Some(style) = args.answer_style {
            retrieval.answer_style = style;
        }
        // Closed book, passages only feed the recall figures: rerankers would only cost time.
        if args.no_rerank || args.closed_book {
            retrieval.rerankers.clear();
        }
        // Retrieve the top 20 (for recall@20); the prompt still gets the first `passages`.
        retrieval.top_k = retrieval.top_k.max(20);
        let asks = args.squad.is_some() || !args.gold.is_empty();
        let pipeline = (!args.retrieval_only && asks).then(|| {
            let mut p = app.pipeline();
            p.max_answer_tokens = p.max_answer_tokens.min(EVAL_ANSWER_TOKENS);
            p
        });
        let mut generate_always = Retrieval { min_score: f32::MIN, ..retrieval.clone() };
        generate_always.abstain.calibration = None;
        Ok(Self {
            app,
            args,
            generate_always,
            retrieval,
            template,
            pipeline,
            in_flight: if args.retrieval_only { 1 } else { app.config.models.generator.parallel() },
            question_seconds: Default::default(),
            lora: args.adapter.clone().map(|path| lore_core::LoraAdapter { path, scale: args.adapter_scale }),
        })
    }

    /// The retrieval settings questions are asked with.
    pub(crate) fn retrieval(&self) -> &Retrieval {
        &self.retrieval
    }

    /// Passages put in front of each question (at most).
    pub(crate) fn passages(&self) -> usize {
        self.retrieval.passages
    }

    /// How this run declines questions.
    pub(crate) fn abstention(&self) -> anyhow::Result<Abstention> {
        if self.args.no_abstain {
            return Ok(Abstention::Never);
        }
        Ok(match &self.retrieval.abstain.calibration {
            Some(file) => Abstention::Calibrated {
                calibration: Arc::new(Calibration::load(file)?),
                threshold: self.retrieval.abstain.threshold,
                floor: Some(self.retrieval.min_score),
            },
            None => Abstention::MinScore(self.retrieval.min_score),
        })
    }

    /// Asks every question of `squad` (up to `--limit`), and those of `off_topic` of each
    /// article's knowledge base.
    pub(crate) async fn ask_file(&self, squad: &Path, off_topic: Option<&Path>) -> anyhow::Result<Vec<Asked>> {
        let data = read_squad(squad)?;
        if self.args.document.is_some() && data.data.len() != 1 {
            anyhow::bail!("--document stands for one article; {} has {}", squad.display(), data.data.len());
        }
        let off_topic = match off_topic {
            Some(file) => off_topic_questions(file, self.args.off_topic_limit)?,
            None => Vec::new(),
        };
        let work = match &self.args.keep {
            Some(dir) => dir.clone(),
            None => std::env::temp_dir().join(format!("lore-eval-{}", std::process::id())),
        };
        let store = KbStore::open(&work).await?;
        let mut asked: Vec<Asked> = Vec::new();
        let mut left = self.args.limit.unwrap_or(usize::MAX);
        for (ai, article) in data.data.iter().enumerate() {
            if left == 0 {
                break;
            }
            let chain = self.ingest_article(&store, &work, squad, ai, article).await?;
            let mut questions: Vec<(Gold, Kind, &Qa)> = article
                .paragraphs
                .iter()
                .enumerate()
                .flat_map(|(pi, p)| {
                    p.qas.iter().map(move |qa| {
                        let kind = if qa.is_impossible || qa.answers.is_empty() {
                            Kind::Unanswerable
                        } else {
                            Kind::Answerable
                        };
                        (Gold::Place(GoldPlace::of_paragraph(pi)), kind, qa)
                    })
                })
                .collect();
            questions = spread(questions, left);
            left -= questions.len();
            let off: Vec<_> = off_topic.iter().map(|qa| (Gold::Unknown, Kind::OffTopic, qa)).collect();
            questions = interleave(questions, off);
            asked.extend(self.ask_all(&chain, questions).await?);
        }
        if self.args.keep.is_none() {
            let _ = std::fs::remove_dir_all(&work);
        }
        Ok(asked)
    }

    /// Writes the article's paragraphs as one text file (the way a user would have it),
    /// ingests it into a knowledge base of its own, and builds the retrieval chain on it.
    async fn ingest_article(
        &self,
        store: &KbStore,
        work: &Path,
        squad: &Path,
        ai: usize,
        article: &Article,
    ) -> anyhow::Result<Chain> {
        // Named after the file too: one `--keep` folder may serve several SQuAD files.
        let stem = squad.file_stem().and_then(|s| s.to_str()).unwrap_or("squad");
        let stem: String = stem.chars().take(40).map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let name = format!("{stem}_{ai}{}", if self.args.document.is_some() { "_document" } else { "" });
        let file = match &self.args.document {
            Some(document) => document.clone(),
            None => {
                let file = work.join(format!("{name}.txt"));
                let text = article.paragraphs.iter().map(|p| p.context.trim()).collect::<Vec<_>>().join("\n\n") + "\n";
                std::fs::write(&file, &text)?;
                file
            }
        };
        let kb = store.open_or_create(&name, self.app.embedder.dim()).await?;
        let progress = if self.args.json { Progress::Quiet } else { Progress::Bar };
        let settings = crate::ingest::Settings::new(self.app.config.chunking_for(""));
        crate::ingest::ingest(&kb, self.app.embedder.as_ref(), &[file], &settings, progress).await?;
        if !self.args.json {
            eprintln!("eval: {} ({} paragraphs)", article.title, article.paragraphs.len());
        }
        // Also with 0: a `--keep` folder may hold an earlier run's questions.
        let questions = self.app.refresh_questions(&kb, self.args.generated_questions, progress).await?;
        if self.args.generated_questions > 0 {
            eprintln!("eval: {}: {questions}", article.title);
            let mut spent = self.question_seconds.lock().expect("question time");
            spent.0 += questions.seconds;
            spent.1 += questions.chunks_asked;
        }
        let plugins = self.app.plugin_context();
        let mut retrieval = self.retrieval.clone();
        // Read by `abstention()`; the chain itself answers everything.
        retrieval.abstain.calibration = None;
        Chain::build(
            KbHandle::new(store.clone(), &name)?,
            retrieval,
            self.template.clone(),
            &plugins,
            &self.app.languages,
        )
    }

    /// Asks one of a bot's gold questions of `chain` (its own knowledge base): the answer,
    /// its signals, and the rank of the first passage from `source` when one is named.
    pub(crate) async fn ask_gold(
        &self,
        chain: &Chain,
        id: String,
        case: &crate::question::feedback::GoldCase,
    ) -> anyhow::Result<Asked> {
        let kind = if case.answer.is_some() { Kind::Answerable } else { Kind::Unanswerable };
        let qa = Qa {
            id,
            question: case.question.clone(),
            answers: case.answer.iter().map(|g| AnswerSpan { text: g.clone() }).collect(),
            is_impossible: kind != Kind::Answerable,
        };
        let gold = match &case.source {
            Some(source) => Gold::Source { source: source.clone(), lines: case.lines.clone() },
            None => Gold::Unknown,
        };
        self.ask(chain, gold, kind, &qa).await
    }

    /// Asks `questions` (with the place of their gold paragraph), `in_flight` at a time.
    async fn ask_all(&self, chain: &Chain, questions: Vec<(Gold, Kind, &Qa)>) -> anyhow::Result<Vec<Asked>> {
        futures::stream::iter(questions)
            .map(|(gold, kind, qa)| self.ask(chain, gold, kind, qa))
            .buffered(self.in_flight)
            .and_then(|asked| async move {
                if let Some(file) = &self.args.details {
                    append_details(file, &asked)?;
                }
                Ok(asked)
            })
            .try_collect()
            .await
    }

    async fn ask(&self, chain: &Chain, gold: Gold, kind: Kind, qa: &Qa) -> anyhow::Result<Asked> {
        let started = Instant::now();
        // Recall@k and MRR are computed on the reranked candidates, best first.
        let retrieved = chain.retrieve_with(&qa.question, crate::question::pipeline::Reranking::Full).await?;
        let ranked = &retrieved.hits;
        let gold_rank = ranked.iter().position(|h| gold.holds(&h.chunk)).map(|r| r + 1);
        let source = match &gold {
            Gold::Source { source, .. } => Some(source.clone()),
            _ => None,
        };
        let top_score = ranked.first().map(|h| h.score);
        let mut signals = Signals::default();
        let mut judge_ms = 0.0;
        let (answer, evidence, quote) = match &self.pipeline {
            None => (String::new(), None, None),
            Some(p) if self.args.closed_book => {
                let answer = short_answer(
                    p.model.as_ref(),
                    &qa.question,
                    &[],
                    p.max_answer_tokens,
                    p.sampling.clone(),
                    self.lora.as_ref(),
                );
                (answer.await?, None, None)
            }
            Some(p) => {
                // No evidence at all is as weak as it gets.
                let evidence = best_similarity(ranked).unwrap_or(f32::MIN);
                // In the knowledge base's language, as its bots answer: quoting where the
                // generator does not speak it.
                let language = chain.language().await;
                let (bots, voice) = chain.voice(language, chain.kb_language().await);
                let mut settings = self.generate_always.in_language(language);
                settings.answer_style = bots.answer_style;
                let template = self.template.in_language(language);
                let judging = Judging { calibration: None, costly: true, observe: true, names: chain.names.clone() };
                let answer = p
                    .answer_from(
                        &settings,
                        crate::question::pipeline::Voice {
                            template: &template,
                            lora: self.lora.as_ref(),
                            quote_by_words: voice.quote_by_words,
                        },
                        &qa.question,
                        &[],
                        retrieved,
                        judging,
                        started.elapsed(),
                    )
                    .await?;
                let outcome = respond(answer, &mut Discard).await?;
                signals = outcome.judged.signals.clone();
                judge_ms = outcome.judged.time.as_secs_f64() * 1e3;
                let quote = outcome.quote.map(|q| q.sentence);
                let answer = match settings.answer_style {
                    AnswerStyle::Quote => outcome.text, // a sentence as it stands in the passage
                    AnswerStyle::Generate | AnswerStyle::Verified => clean_answer(&outcome.text),
                };
                (answer, Some(evidence), quote)
            }
        };
        // The model saying it does not know is an abstention too.
        let answer = if says_dont_know(&answer) { String::new() } else { answer };
        let golds: Vec<String> = match kind {
            Kind::OffTopic => Vec::new(),
            _ => qa.answers.iter().map(|a| a.text.clone()).collect(),
        };
        Ok(Asked {
            id: qa.id.clone(),
            question: qa.question.clone(),
            kind,
            golds,
            gold_rank,
            source,
            evidence,
            top_score,
            answer,
            quote,
            signals,
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
            judge_ms,
        })
    }

    /// The predictions file (official format; the article's own questions) and, with
    /// `--details`, one JSON line per question.
    fn write_files(&self, asked: &[Asked], abstention: &Abstention) -> anyhow::Result<()> {
        if !self.args.retrieval_only {
            let predictions: BTreeMap<&str, &str> = asked
                .iter()
                .filter(|a| a.kind != Kind::OffTopic)
                .map(|a| (a.id.as_str(), if abstention.declines(a) { "" } else { a.answer.as_str() }))
                .collect();
            std::fs::write(&self.args.predictions, serde_json::to_vec_pretty(&predictions)?)
                .with_context(|| format!("cannot write {}", self.args.predictions.display()))?;
        }
        if let Some(file) = &self.args.details {
            write_details(file, asked, abstention)?;
        }
        Ok(())
    }

    /// Metrics under this run's abstention, beside answering everything; the `min_score`
    /// sweep; the settings used.
    fn report(&self, asked: &[Asked], abstention: &Abstention) -> Value {
        let (args, retrieval) = (self.args, &self.retrieval);
        let answers = !args.retrieval_only;
        let own: Vec<&Asked> = asked.iter().filter(|a| a.kind != Kind::OffTopic).collect();
        let scored_own: Vec<Scored> = own.iter().map(|a| scored(a, abstention)).collect();
        let mut report = metrics(&scored_own, answers);
        let m = report.as_object_mut().expect("object");
        if answers && !args.closed_book {
            m.insert("abstention_sweep".into(), abstention_sweep(&own));
            m.insert("abstention".into(), abstention_report(asked, abstention));
            let judge: Vec<f64> = asked.iter().map(|a| a.judge_ms).collect();
            m.insert("judge_ms_p50".into(), json!(lore_engine::bench::percentile(&judge, 50.0)));
        }
        if asked.iter().any(|a| a.quote.is_some()) {
            m.insert("quote_contains_gold".into(), json!(quote_contains_gold(asked)));
        }
        m.insert("retriever".into(), json!(retrieval.retriever.name()));
        m.insert("rerankers".into(), json!(retrieval.rerankers.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>()));
        m.insert("min_score".into(), json!(retrieval.min_score));
        m.insert("calibration".into(), json!(retrieval.abstain.calibration.as_ref().map(|f| f.display().to_string())));
        m.insert("closed_book".into(), json!(args.closed_book));
        if let Some(bot) = &args.bot {
            m.insert("bot".into(), json!(bot));
        }
        if let Some(adapter) = &args.adapter {
            m.insert("adapter".into(), json!(adapter.display().to_string()));
        }
        if args.generated_questions > 0 {
            let (seconds, chunks) = *self.question_seconds.lock().expect("question time");
            m.insert("generated_questions".into(), json!(args.generated_questions));
            m.insert("question_seconds_per_chunk".into(), json!(seconds / chunks.max(1) as f64));
        }
        let files: Vec<String> = args.squad.iter().chain(&args.signals).map(|f| f.display().to_string()).collect();
        m.insert("file".into(), json!(files.join(", ")));
        report
    }
}

/// One JSON line per question: the answer, the signals, and how it was scored.
pub(crate) fn write_details(file: &Path, asked: &[Asked], abstention: &Abstention) -> anyhow::Result<()> {
    let lines: Vec<String> = asked
        .iter()
        .map(|a| {
            let s = scored(a, abstention);
            let mut line = serde_json::to_value(a).expect("plain data");
            let o = line.as_object_mut().expect("an object");
            o.insert("exact".into(), json!(s.exact));
            o.insert("f1".into(), json!(s.f1));
            o.insert("abstained".into(), json!(s.abstained));
            o.insert("right".into(), json!(a.right()));
            o.insert("confidence".into(), json!(abstention.confidence(a)));
            line.to_string()
        })
        .collect();
    std::fs::write(file, lines.join("\n") + "\n").with_context(|| format!("cannot write {}", file.display()))
}

/// One question's line, added as soon as it is answered (rewritten with its score at the end).
fn append_details(file: &Path, asked: &Asked) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::fs::OpenOptions::new().append(true).create(true).open(file)?;
    writeln!(out, "{}", serde_json::to_string(asked)?).with_context(|| format!("cannot write {}", file.display()))
}

/// At most `limit` of `items`, spread evenly over them (a limited run still sees the
/// whole article, not its first paragraphs).
fn spread<T>(items: Vec<T>, limit: usize) -> Vec<T> {
    if items.len() <= limit {
        return items;
    }
    let step = items.len() as f64 / limit.max(1) as f64;
    let keep: std::collections::HashSet<usize> = (0..limit).map(|i| (i as f64 * step) as usize).collect();
    items.into_iter().enumerate().filter(|(i, _)| keep.contains(i)).map(|(_, item)| item).collect()
}

/// `extra` spread evenly among `items`, so a run stopped early has asked some of each.
fn interleave<T>(items: Vec<T>, extra: Vec<T>) -> Vec<T> {
    let total = items.len() + extra.len();
    let extras = extra.len();
    let (mut items, mut extra) = (items.into_iter(), extra.into_iter());
    let mut out = Vec::with_capacity(total);
    let mut placed = 0;
    while out.len() < total {
        // The j-th extra goes (j + 0.5) / extras of the way through.
        let due = placed < extras && out.len() >= ((placed as f64 + 0.5) * total as f64 / extras as f64) as usize;
        match if due { None } else { items.next() } {
            Some(item) => out.push(item),
            None => {
                placed += 1;
                out.extend(extra.next());
            }
        }
    }
    out
}

/// Questions as `--details` wrote them.
pub(crate) fn read_details(file: &Path) -> anyhow::Result<Vec<Asked>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a line of `lore eval --details`", file.display(), i + 1))
        })
        .collect()
}

/// How well `abstention` declines what it should, against answering everything: the
/// share of unanswerable and off-topic questions declined, the answerable F1 kept, and
/// how well its confidence separates answerable from other questions, and right answers
/// from the rest (AUROC).
pub fn abstention_report(asked: &[Asked], abstention: &Abstention) -> Value {
    let of = |kind: Kind| asked.iter().filter(move |a| a.kind == kind);
    let declined = |kind: Kind| frac(of(kind).filter(|a| abstention.declines(a)).count(), of(kind).count());
    let hasans_f1 = |abstention: &Abstention| {
        of(Kind::Answerable).map(|a| scored(a, abstention).f1).sum::<f64>() / of(Kind::Answerable).count().max(1) as f64
    };
    let baseline = hasans_f1(&Abstention::Never);
    let answered: Vec<&Asked> = asked.iter().filter(|a| !abstention.declines(a)).collect();
    let confidence: Vec<f64> = asked.iter().map(|a| abstention.confidence(a)).collect();
    let answerable: Vec<bool> = asked.iter().map(|a| a.kind == Kind::Answerable).collect();
    let right: Vec<bool> = asked.iter().map(Asked::right).collect();
    json!({
        "unanswerable_declined": declined(Kind::Unanswerable),
        "off_topic_declined": declined(Kind::OffTopic),
        "answerable_declined": declined(Kind::Answerable),
        "hasans_f1": 100.0 * hasans_f1(abstention),
        "hasans_f1_no_abstain": 100.0 * baseline,
        "hasans_f1_kept": if baseline > 0.0 { hasans_f1(abstention) / baseline } else { 0.0 },
        "answered": frac(answered.len(), asked.len()),
        "precision": frac(answered.iter().filter(|a| a.right()).count(), answered.len()),
        "auroc_answerable": auroc(&confidence, &answerable),
        "auroc_right": auroc(&confidence, &right),
    })
}

/// The area under the ROC curve of `scores` for `positive`: the chance that a positive
/// scores above a negative (ties count half). 0.5 when either class is empty.
pub fn auroc(scores: &[f64], positive: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Mann-Whitney: the positives' mean rank, ties sharing their mean rank.
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    let n_pos = positive.iter().filter(|&&p| p).count() as f64;
    let n_neg = positive.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return 0.5;
    }
    let rank_sum: f64 = ranks.iter().zip(positive).filter(|(_, &p)| p).map(|(r, _)| r).sum();
    (rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
}

/// Among answerable questions, the share whose quoted sentence holds a gold answer (both
/// normalised as SQuAD normalises answers); a question without a quote counts as a miss.
fn quote_contains_gold(asked: &[Asked]) -> f64 {
    let answerable: Vec<&Asked> = asked.iter().filter(|a| a.kind == Kind::Answerable).collect();
    let holds = |a: &&Asked| {
        let quote = a.quote.as_deref().map(normalize_answer).unwrap_or_default();
        !quote.is_empty() && a.golds.iter().map(|g| normalize_answer(g)).any(|g| !g.is_empty() && quote.contains(&g))
    };
    frac(answerable.iter().copied().filter(holds).count(), answerable.len())
}

fn abstention_sweep(asked: &[&Asked]) -> Value {
    let sweep: Vec<Value> = SWEEP
        .iter()
        .map(|&t| {
            let s: Vec<Scored> = asked.iter().map(|a| scored(a, &Abstention::MinScore(t))).collect();
            let v = metrics(&s, true);
            json!({
                "min_score": t,
                "HasAns_f1": v["HasAns_f1"],
                "NoAns_f1": v["NoAns_f1"],
                "f1": v["f1"],
                "abstention_precision": v["abstention_precision"],
                "abstention_recall": v["abstention_recall"],
            })
        })
        .collect();
    json!(sweep)
}

struct Discard;

#[async_trait::async_trait]
impl ReplySink for Discard {
    async fn typing(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    async fn update(&mut self, _: &str) -> anyhow::Result<()> {
        Ok(())
    }
    async fn finish(&mut self, _: &str, _: &[SourceRef]) -> anyhow::Result<()> {
        Ok(())
    }
    async fn say(&mut self, _: &str) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Exact match and token F1 against the best gold answer; for unanswerable questions an
/// empty prediction scores 1, anything else 0.
pub fn score(prediction: &str, golds: &[&str], has_answer: bool) -> (f64, f64) {
    let p = normalize_answer(prediction);
    if !has_answer {
        let v = if p.is_empty() { 1.0 } else { 0.0 };
        return (v, v);
    }
    let mut best = (0.0f64, 0.0f64);
    for g in golds {
        let g = normalize_answer(g);
        let exact = if p == g { 1.0 } else { 0.0 };
        best.0 = best.0.max(exact);
        best.1 = best.1.max(f1(&p, &g));
    }
    best
}

fn f1(prediction: &str, gold: &str) -> f64 {
    let p: Vec<&str> = prediction.split_whitespace().collect();
    let g: Vec<&str> = gold.split_whitespace().collect();
    if p.is_empty() || g.is_empty() {
        return if p == g { 1.0 } else { 0.0 };
    }
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for w in &g {
        *counts.entry(w).or_default() += 1;
    }
    let mut common = 0;
    for w in &p {
        if let Some(c) = counts.get_mut(w) {
            if *c > 0 {
                *c -= 1;
                common += 1;
            }
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / p.len() as f64;
    let recall = common as f64 / g.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

fn metrics(s: &[Scored], answers: bool) -> Value {
    let answerable: Vec<&Scored> = s.iter().filter(|x| x.kind == Kind::Answerable).collect();
    let unanswerable: Vec<&Scored> = s.iter().filter(|x| x.kind != Kind::Answerable).collect();
    let recall_at =
        |k: usize| frac(answerable.iter().filter(|x| x.gold_rank.is_some_and(|r| r <= k)).count(), answerable.len());
    let mrr = answerable.iter().map(|x| x.gold_rank.map_or(0.0, |r| 1.0 / r as f64)).sum::<f64>()
        / answerable.len().max(1) as f64;
    let mut m = json!({
        "questions": s.len(),
        "answerable": answerable.len(),
        "unanswerable": unanswerable.len(),
        "recall@1": recall_at(1),
        "recall@5": recall_at(5),
        "recall@20": recall_at(20),
        "mrr": mrr,
    });
    if answers {
        let avg =
            |v: &[&Scored], f: fn(&Scored) -> f64| 100.0 * v.iter().map(|x| f(x)).sum::<f64>() / v.len().max(1) as f64;
        let all: Vec<&Scored> = s.iter().collect();
        let abstained = s.iter().filter(|x| x.abstained).count();
        let correct_abstentions = unanswerable.iter().filter(|x| x.abstained).count();
        let lat: Vec<f64> = s.iter().map(|x| x.latency_ms).collect();
        let o = m.as_object_mut().expect("object");
        o.insert("exact".into(), json!(avg(&all, |x| x.exact)));
        o.insert("f1".into(), json!(avg(&all, |x| x.f1)));
        o.insert("HasAns_exact".into(), json!(avg(&answerable, |x| x.exact)));
        o.insert("HasAns_f1".into(), json!(avg(&answerable, |x| x.f1)));
        o.insert("NoAns_exact".into(), json!(avg(&unanswerable, |x| x.exact)));
        o.insert("NoAns_f1".into(), json!(avg(&unanswerable, |x| x.f1)));
        o.insert("abstained".into(), json!(abstained));
        o.insert("abstention_precision".into(), json!(frac(correct_abstentions, abstained)));
        o.insert("abstention_recall".into(), json!(frac(correct_abstentions, unanswerable.len())));
        o.insert("latency_ms_p50".into(), json!(lore_engine::bench::percentile(&lat, 50.0)));
        o.insert("latency_ms_p95".into(), json!(lore_engine::bench::percentile(&lat, 95.0)));
    }
    m
}

fn frac(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

pub fn print_table(m: &Value) {
    let keys = [
        "questions",
        "answerable",
        "unanswerable",
        "recall@1",
        "recall@5",
        "recall@20",
        "mrr",
        "exact",
        "f1",
        "HasAns_exact",
        "HasAns_f1",
        "NoAns_exact",
        "NoAns_f1",
        "abstained",
        "abstention_precision",
        "abstention_recall",
        "quote_contains_gold",
        "generated_questions",
        "question_seconds_per_chunk",
        "judge_ms_p50",
        "latency_ms_p50",
        "latency_ms_p95",
    ];
    println!(
        "{} — retriever {}, min_score {}, closed book {}",
        m["file"].as_str().unwrap_or(""),
        m["retriever"],
        m["min_score"],
        m["closed_book"]
    );
    for k in keys {
        if let Some(v) = m.get(k) {
            match v.as_f64() {
                Some(x) if v.is_f64() => println!("  {k:<22} {x:>9.3}"),
                _ => println!("  {k:<22} {v:>9}"),
            }
        }
    }
    if let Some(a) = m.get("abstention").and_then(Value::as_object) {
        println!(
            "  abstention ({}):",
            m["calibration"].as_str().map_or("min_score".to_string(), |c| format!("calibration {c}"))
        );
        for (k, v) in a {
            println!("    {k:<26} {:>9.3}", v.as_f64().unwrap_or(f64::NAN));
        }
    }
    if let Some(sweep) = m.get("abstention_sweep").and_then(Value::as_array) {
        println!("  abstention sweep: min_score  HasAns_f1  NoAns_abstained  abstention_precision  f1");
        for row in sweep {
            let f = |k: &str| row[k].as_f64().unwrap_or(f64::NAN);
            println!(
                "  {:>27.2}  {:>9.1}  {:>15.3}  {:>20.3}  {:>5.1}",
                f("min_score"),
                f("HasAns_f1"),
                f("abstention_recall"),
                f("abstention_precision"),
                f("f1")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_limited_run_spreads_over_the_article_and_mixes_in_the_off_topic_questions() {
        assert_eq!(super::spread((0..10).collect(), 5), vec![0, 2, 4, 6, 8]);
        assert_eq!(super::spread((0..3).collect(), 5), vec![0, 1, 2]);
        let mixed = super::interleave((0..8).collect(), vec![100, 101]);
        assert_eq!(mixed, vec![0, 1, 100, 2, 3, 4, 5, 101, 6, 7]);
        assert_eq!(super::interleave(Vec::<i32>::new(), vec![1, 2]), vec![1, 2]);
        assert_eq!(super::interleave(vec![1, 2], Vec::new()), vec![1, 2]);
    }

    use super::*;

    #[test]
    fn squad_scores() {
        assert_eq!(score("in France [1]", &["France"], true).0, 0.0);
        assert_eq!(score(&clean_answer("France [1]."), &["France"], true), (1.0, 1.0));
        let (_, f) = score("northern France", &["France", "Normandy"], true);
        assert!((f - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(score("", &[], false), (1.0, 1.0));
        assert_eq!(score("France", &[], false), (0.0, 0.0));
    }

    #[test]
    fn auroc_counts_pairs_in_order_and_ties_as_half() {
        assert_eq!(auroc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]), 1.0);
        assert_eq!(auroc(&[0.1, 0.2, 0.8, 0.9], &[true, true, false, false]), 0.0);
        assert_eq!(auroc(&[0.5, 0.5], &[true, false]), 0.5);
        assert!((auroc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]) - 0.75).abs() < 1e-12);
        assert_eq!(auroc(&[0.3], &[true]), 0.5, "one class only");
    }

    fn asked(kind: Kind, answer: &str, golds: &[&str]) -> Asked {
        Asked {
            id: "q".into(),
            question: "?".into(),
            kind,
            golds: golds.iter().map(|g| g.to_string()).collect(),
            gold_rank: None,
            source: None,
            evidence: Some(0.5),
            top_score: None,
            answer: answer.into(),
            quote: None,
            signals: Signals::default(),
            latency_ms: 0.0,
            judge_ms: 0.0,
        }
    }

    #[test]
    fn an_answer_is_right_when_it_matches_or_holds_a_gold_answer() {
        assert!(asked(Kind::Answerable, "France", &["France"]).right());
        assert!(asked(Kind::Answerable, "Normandy is a region in northern France", &["France"]).right());
        assert!(!asked(Kind::Answerable, "Denmark", &["France"]).right());
        assert!(!asked(Kind::Answerable, "", &["France"]).right(), "declined");
        assert!(!asked(Kind::Unanswerable, "France", &[]).right(), "nothing to answer");
        assert!(!asked(Kind::OffTopic, "France", &[]).right());
    }

    #[test]
    fn the_abstention_report_weighs_declining_against_answering_everything() {
        let all = [
            asked(Kind::Answerable, "France", &["France"]),
            Asked { evidence: Some(0.1), ..asked(Kind::Answerable, "Spain", &["Normandy"]) },
            Asked { evidence: Some(0.1), ..asked(Kind::Unanswerable, "Rollo", &[]) },
            Asked { evidence: Some(0.05), ..asked(Kind::OffTopic, "P versus NP", &[]) },
        ];
        let r = abstention_report(&all, &Abstention::MinScore(0.3));
        assert_eq!(r["unanswerable_declined"], 1.0);
        assert_eq!(r["off_topic_declined"], 1.0);
        assert_eq!(r["hasans_f1_kept"], 1.0, "the declined answerable one was wrong anyway");
        assert_eq!(r["precision"], 1.0);
        assert_eq!(r["auroc_right"], 1.0);
        let never = abstention_report(&all, &Abstention::Never);
        assert_eq!((never["unanswerable_declined"].as_f64(), never["answered"].as_f64()), (Some(0.0), Some(1.0)));
    }
}
