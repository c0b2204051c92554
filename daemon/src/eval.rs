//! `lore eval`: ask every question of a SQuAD 2.0 file through the bots' pipeline and score
//! retrieval (recall@k, MRR of the gold paragraph) and answers (official EM / F1, abstention).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use lore_core::{ChatModel, GenerateRequest, Hit, ReplySink, Sampling, SourceRef};
use lore_plugins::{KbHandle, KbStore, RetrieverConfig};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::App;
use crate::config::{AnswerStyle, Retrieval};
use crate::ingest::Progress;
use crate::pipeline::{best_similarity, respond, Chain, Pipeline};
use crate::prompt::{self, Template};

#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// A SQuAD 2.0 JSON file (official format).
    #[arg(long)]
    pub squad: PathBuf,
    /// Retriever to use instead of the config's: vector, fulltext or hybrid.
    #[arg(long)]
    pub retriever: Option<String>,
    /// Skip the config's rerankers (retriever order only).
    #[arg(long)]
    pub no_rerank: bool,
    /// Abstention threshold instead of the config's `min_score`.
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
    /// Also write one JSON line per question (answer, evidence, gold rank, scores) here.
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
    /// `generate`, or `quote`: the best sentence of the passages is the answer (no
    /// generation; `retrieval.answer_style`).
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

/// Where a question's gold paragraph is in the ingested file.
#[derive(Debug, Clone, Copy)]
struct GoldPlace {
    /// Its first line in the article's text file (one blank line between paragraphs).
    line: u32,
    /// Its page in a `--document` PDF (one paragraph per page).
    page: u32,
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
struct Squad {
    data: Vec<Article>,
}

#[derive(Deserialize)]
struct Article {
    title: String,
    paragraphs: Vec<Paragraph>,
}

#[derive(Deserialize)]
struct Paragraph {
    context: String,
    qas: Vec<Qa>,
}

#[derive(Deserialize)]
struct Qa {
    id: String,
    question: String,
    #[serde(default)]
    answers: Vec<AnswerSpan>,
    #[serde(default)]
    is_impossible: bool,
}

#[derive(Deserialize)]
struct AnswerSpan {
    text: String,
}

/// One question asked: what the model said and how strong the evidence was, so the
/// abstention threshold can be applied (and swept) afterwards without asking again.
#[derive(Debug, Clone)]
struct Asked {
    id: String,
    question: String,
    has_answer: bool,
    golds: Vec<String>,
    /// 1-based rank of the gold paragraph among the top 20 (None: not found).
    gold_rank: Option<usize>,
    /// Best similarity among the retrieved passages (None: closed book).
    evidence: Option<f32>,
    /// The first passage's score after reranking (the `llm` reranker: the question's mean
    /// log-probability after it).
    top_score: Option<f32>,
    /// The cleaned answer ("" when the model itself said it does not know).
    answer: String,
    /// The sentence quoted as evidence, or given as the answer.
    quote: Option<String>,
    latency_ms: f64,
}

/// A question scored at one abstention threshold.
#[derive(Debug, Clone)]
struct Scored {
    has_answer: bool,
    gold_rank: Option<usize>,
    exact: f64,
    f1: f64,
    abstained: bool,
    latency_ms: f64,
}

impl Asked {
    /// The answer as submitted at this threshold ("" = abstained).
    fn prediction(&self, min_score: f32) -> &str {
        let weak = self.evidence.is_some_and(|e| e < min_score);
        if weak {
            ""
        } else {
            &self.answer
        }
    }

    fn scored(&self, min_score: f32) -> Scored {
        let prediction = self.prediction(min_score);
        let golds: Vec<&str> = self.golds.iter().map(String::as_str).collect();
        let (exact, f1) = score(prediction, &golds, self.has_answer);
        Scored {
            has_answer: self.has_answer,
            gold_rank: self.gold_rank,
            exact,
            f1,
            abstained: prediction.is_empty(),
            latency_ms: self.latency_ms,
        }
    }
}

/// Answers are a short phrase; a longer budget only lets the small model ramble.
const EVAL_ANSWER_TOKENS: usize = 48;

/// Abstention thresholds reported by the sweep.
const SWEEP: [f32; 11] = [0.0, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6];

pub const EVAL_SYSTEM: &str = include_str!("../../prompts/eval-system.txt");

/// Asks every question (up to `--limit`) of the SQuAD file, article by article, and
/// returns the metrics; writes the predictions (and `--details`) files.
pub async fn run(app: &App, args: &EvalArgs) -> anyhow::Result<Value> {
    let squad = read_squad(&args.squad)?;
    if args.document.is_some() && squad.data.len() != 1 {
        anyhow::bail!("--document stands for one article; {} has {}", args.squad.display(), squad.data.len());
    }
    let eval = Evaluation::new(app, args)?;
    let work = match &args.keep {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("lore-eval-{}", std::process::id())),
    };
    let store = KbStore::open(&work).await?;
    let mut asked: Vec<Asked> = Vec::new();
    let mut left = args.limit.unwrap_or(usize::MAX);
    for (ai, article) in squad.data.iter().enumerate() {
        if left == 0 {
            break;
        }
        let chain = eval.ingest_article(&store, &work, ai, article).await?;
        let questions: Vec<(GoldPlace, &Qa)> = article
            .paragraphs
            .iter()
            .enumerate()
            .flat_map(|(pi, p)| p.qas.iter().map(move |qa| (GoldPlace::of_paragraph(pi), qa)))
            .take(left)
            .collect();
        left -= questions.len();
        asked.extend(eval.ask_all(&chain, questions).await?);
    }
    if args.keep.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
    eval.write_files(&asked)?;
    Ok(eval.report(&asked))
}

fn read_squad(file: &std::path::Path) -> anyhow::Result<Squad> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}: not a SQuAD 2.0 JSON file", file.display()))
}

/// One evaluation run's settings, shared by every article.
struct Evaluation<'a> {
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
    fn new(app: &'a App, args: &'a EvalArgs) -> anyhow::Result<Self> {
        let mut retrieval = app.config.retrieval.clone();
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
        let pipeline = (!args.retrieval_only).then(|| {
            let mut p = app.pipeline();
            p.max_answer_tokens = p.max_answer_tokens.min(EVAL_ANSWER_TOKENS);
            p
        });
        Ok(Self {
            app,
            args,
            generate_always: Retrieval { min_score: f32::MIN, ..retrieval.clone() },
            retrieval,
            template: Template { system: EVAL_SYSTEM.trim().to_string(), body: None },
            pipeline,
            in_flight: if args.retrieval_only { 1 } else { app.config.models.generator.parallel },
            question_seconds: Default::default(),
            lora: args.adapter.clone().map(|path| lore_core::LoraAdapter { path, scale: args.adapter_scale }),
        })
    }

    /// Writes the article's paragraphs as one text file (the way a user would have it),
    /// ingests it into a knowledge base of its own, and builds the retrieval chain on it.
    async fn ingest_article(
        &self,
        store: &KbStore,
        work: &std::path::Path,
        ai: usize,
        article: &Article,
    ) -> anyhow::Result<Chain> {
        // Named after the file too: one `--keep` folder may serve several SQuAD files.
        let stem = self.args.squad.file_stem().and_then(|s| s.to_str()).unwrap_or("squad");
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
        Chain::build(KbHandle::new(store.clone(), &name)?, self.retrieval.clone(), self.template.clone(), &plugins)
    }

    /// Asks `questions` (with the place of their gold paragraph), `in_flight` at a time.
    async fn ask_all(&self, chain: &Chain, questions: Vec<(GoldPlace, &Qa)>) -> anyhow::Result<Vec<Asked>> {
        futures::stream::iter(questions)
            .map(|(gold, qa)| self.ask(chain, gold, qa))
            .buffered(self.in_flight)
            .try_collect()
            .await
    }

    async fn ask(&self, chain: &Chain, gold: GoldPlace, qa: &Qa) -> anyhow::Result<Asked> {
        let started = Instant::now();
        // Recall@k and MRR are computed on the reranked candidates, best first.
        let ranked = chain.retrieve(&qa.question).await?;
        let gold_rank = ranked.iter().position(|h| gold.holds(&h.chunk)).map(|r| r + 1);
        let top_score = ranked.first().map(|h| h.score);
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
                let evidence = best_similarity(&ranked).unwrap_or(f32::MIN);
                let answer = p
                    .answer_from(
                        &self.generate_always,
                        crate::pipeline::Voice { template: &self.template, lora: self.lora.as_ref() },
                        &qa.question,
                        &[],
                        ranked,
                        started.elapsed(),
                    )
                    .await?;
                let outcome = respond(answer, &mut Discard).await?;
                let quote = outcome.quote.map(|q| q.sentence);
                let answer = match self.retrieval.answer_style {
                    AnswerStyle::Quote => outcome.text, // a sentence as it stands in the passage
                    AnswerStyle::Generate => clean_answer(&outcome.text),
                };
                (answer, Some(evidence), quote)
            }
        };
        // The model saying it does not know is an abstention too.
        let answer = if says_dont_know(&answer) { String::new() } else { answer };
        let golds: Vec<String> = qa.answers.iter().map(|a| a.text.clone()).collect();
        Ok(Asked {
            id: qa.id.clone(),
            question: qa.question.clone(),
            has_answer: !qa.is_impossible && !golds.is_empty(),
            golds,
            gold_rank,
            evidence,
            top_score,
            answer,
            quote,
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// The predictions file (official format) and, with `--details`, one JSON line per
    /// question.
    fn write_files(&self, asked: &[Asked]) -> anyhow::Result<()> {
        let min_score = self.retrieval.min_score;
        if !self.args.retrieval_only {
            let predictions: BTreeMap<&str, &str> =
                asked.iter().map(|a| (a.id.as_str(), a.prediction(min_score))).collect();
            std::fs::write(&self.args.predictions, serde_json::to_vec_pretty(&predictions)?)
                .with_context(|| format!("cannot write {}", self.args.predictions.display()))?;
        }
        if let Some(file) = &self.args.details {
            let lines: Vec<String> = asked
                .iter()
                .map(|a| {
                    let s = a.scored(min_score);
                    json!({
                        "id": a.id, "question": a.question, "has_answer": a.has_answer, "golds": a.golds,
                        "answer": a.answer, "quote": a.quote, "evidence": a.evidence, "top_score": a.top_score,
                        "gold_rank": a.gold_rank, "exact": s.exact, "f1": s.f1, "abstained": s.abstained,
                        "latency_ms": a.latency_ms,
                    })
                    .to_string()
                })
                .collect();
            std::fs::write(file, lines.join("\n") + "\n")
                .with_context(|| format!("cannot write {}", file.display()))?;
        }
        Ok(())
    }

    /// Metrics at the configured threshold, the abstention sweep, and the settings used.
    fn report(&self, asked: &[Asked]) -> Value {
        let (args, retrieval) = (self.args, &self.retrieval);
        let answers = !args.retrieval_only;
        let scored: Vec<Scored> = asked.iter().map(|a| a.scored(retrieval.min_score)).collect();
        let mut report = metrics(&scored, answers);
        let m = report.as_object_mut().expect("object");
        if answers && !args.closed_book {
            m.insert("abstention_sweep".into(), abstention_sweep(asked));
        }
        if asked.iter().any(|a| a.quote.is_some()) {
            m.insert("quote_contains_gold".into(), json!(quote_contains_gold(asked)));
        }
        m.insert("retriever".into(), json!(retrieval.retriever.name()));
        m.insert("rerankers".into(), json!(retrieval.rerankers.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>()));
        m.insert("min_score".into(), json!(retrieval.min_score));
        m.insert("closed_book".into(), json!(args.closed_book));
        if let Some(adapter) = &args.adapter {
            m.insert("adapter".into(), json!(adapter.display().to_string()));
        }
        if args.generated_questions > 0 {
            let (seconds, chunks) = *self.question_seconds.lock().expect("question time");
            m.insert("generated_questions".into(), json!(args.generated_questions));
            m.insert("question_seconds_per_chunk".into(), json!(seconds / chunks.max(1) as f64));
        }
        m.insert("file".into(), json!(args.squad.display().to_string()));
        report
    }
}

/// Among answerable questions, the share whose quoted sentence holds a gold answer (both
/// normalised as SQuAD normalises answers); a question without a quote counts as a miss.
fn quote_contains_gold(asked: &[Asked]) -> f64 {
    let answerable: Vec<&Asked> = asked.iter().filter(|a| a.has_answer).collect();
    let holds = |a: &&Asked| {
        let quote = a.quote.as_deref().map(normalize_answer).unwrap_or_default();
        !quote.is_empty() && a.golds.iter().map(|g| normalize_answer(g)).any(|g| !g.is_empty() && quote.contains(&g))
    };
    frac(answerable.iter().copied().filter(holds).count(), answerable.len())
}

fn abstention_sweep(asked: &[Asked]) -> Value {
    let sweep: Vec<Value> = SWEEP
        .iter()
        .map(|&t| {
            let s: Vec<Scored> = asked.iter().map(|a| a.scored(t)).collect();
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

/// The model's answer to `question` from `passages` (none: closed book) the way `lore eval`
/// asks for one: its short-answer system message, the bots' prompt, the answer cleaned.
pub async fn short_answer(
    model: &dyn ChatModel,
    question: &str,
    passages: &[Hit],
    max_tokens: usize,
    sampling: Sampling,
    lora: Option<&lore_core::LoraAdapter>,
) -> anyhow::Result<String> {
    let template = Template { system: EVAL_SYSTEM.trim().to_string(), body: None };
    let built = prompt::build(model, &template, question, passages, &[], max_tokens).await?;
    let generated = model
        .generate(GenerateRequest {
            prompt: built.text,
            max_tokens,
            stop: built.stop,
            ignore_eos: false,
            sampling,
            lora: lora.cloned(),
        })?
        .collect()
        .await?;
    Ok(clean_answer(&generated.text))
}

/// The answer without citation marks, on one line.
fn clean_answer(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        match rest[open..].find(']') {
            Some(close) if rest[open + 1..open + close].chars().all(|c| c.is_ascii_digit() || c == ',' || c == ' ') => {
                rest = &rest[open + close + 1..];
            }
            _ => {
                out.push('[');
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// "I don't know", "I do not know the answer.", "Unknown" and the like.
pub fn says_dont_know(text: &str) -> bool {
    let n = normalize_answer(text);
    ["i dont know", "i do not know", "unknown", "not mentioned", "no answer"].iter().any(|p| n.starts_with(p))
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

/// SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punct: String = lower.chars().filter(|c| !c.is_ascii_punctuation()).collect();
    no_punct.split_whitespace().filter(|w| !matches!(*w, "a" | "an" | "the")).collect::<Vec<_>>().join(" ")
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
    let answerable: Vec<&Scored> = s.iter().filter(|x| x.has_answer).collect();
    let unanswerable: Vec<&Scored> = s.iter().filter(|x| !x.has_answer).collect();
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
    use super::*;

    #[test]
    fn squad_normalisation_and_scores() {
        assert_eq!(normalize_answer("The  Normans, of France!"), "normans of france");
        assert_eq!(score("in France [1]", &["France"], true).0, 0.0);
        assert_eq!(score(&clean_answer("France [1]."), &["France"], true), (1.0, 1.0));
        let (_, f) = score("northern France", &["France", "Normandy"], true);
        assert!((f - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(score("", &[], false), (1.0, 1.0));
        assert_eq!(score("France", &[], false), (0.0, 0.0));
        assert!(says_dont_know("I don't know."));
        assert!(!says_dont_know("In France"));
    }

    #[test]
    fn citations_are_removed_but_other_brackets_stay() {
        assert_eq!(clean_answer("Rollo [1, 2] led them [citation]"), "Rollo led them [citation]");
    }
}
