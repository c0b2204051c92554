//! `lore calibrate`: fits the answer-confidence combiners (`confidence.rs`) on labelled
//! questions asked through a bot's own chain and models, chooses their thresholds, prints
//! the risk–coverage table, and writes the calibration file `retrieval.abstain.calibration`
//! names.
//!
//! Labelled questions: SQuAD 2.0 articles (answerable, unanswerable, and off-topic: another
//! file's questions asked of this article's knowledge base), a bot's own gold questions (a
//! JSONL of `{"question", "answer"}`, `"answer": null` for "the documents do not cover
//! this", optional `"source"`), or the `--details` lines of earlier runs. An answer is
//! "right" when it matches a gold answer (F1 ≥ 0.5) or holds one word for word; the
//! combiners estimate the probability of that from the signals, by logistic regression
//! (`linfa-logistic`) on standardised signals.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::bail;
use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use serde_json::{json, Value};

use crate::app::App;
use crate::question::confidence::{signal, Calibration, Combiner, FittedWith, Stage, FORMAT};
use crate::tools::eval::{abstention_report, Abstention, Asked, EvalArgs, Evaluation, Kind};

#[derive(Debug, Clone, clap::Args)]
pub struct CalibrateArgs {
    /// The bot whose chain (retriever, rerankers, prompt) and models answer.
    #[arg(long)]
    pub bot: String,
    /// SQuAD 2.0 files: each article becomes a knowledge base of its own; the next file's
    /// questions are asked of it as off-topic ones.
    #[arg(long)]
    pub squad: Vec<PathBuf>,
    /// Off-topic questions per article, at most.
    #[arg(long, default_value_t = 100)]
    pub off_topic_limit: usize,
    /// The bot's own gold questions (JSONL: question, answer or null, optional source),
    /// asked of its own knowledge base.
    #[arg(long)]
    pub gold: Vec<PathBuf>,
    /// Questions already asked: `lore eval --details` or `--save-signals` files.
    #[arg(long)]
    pub signals: Vec<PathBuf>,
    /// Keep every question asked, with its signals, in this file (one JSON line each).
    #[arg(long)]
    pub save_signals: Option<PathBuf>,
    /// At most this many questions per SQuAD file.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Choose the thresholds so that at least this share of the answers given are right.
    #[arg(long, conflicts_with = "max_answerable_loss")]
    pub target_precision: Option<f64>,
    /// Choose the thresholds so that answerable questions lose at most this share of
    /// their F1 to abstention (default 0.10).
    #[arg(long)]
    pub max_answerable_loss: Option<f64>,
    /// Fit on these signals only (comma-separated; default: those that mean the same in
    /// any knowledge base, `confidence::signal::TRANSFERABLE`).
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// Where to write the calibration.
    #[arg(long)]
    pub out: PathBuf,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// How thresholds are chosen.
#[derive(Debug, Clone, Copy)]
enum Target {
    Precision(f64),
    AnswerableLoss(f64),
}

pub async fn run(app: &App, args: &CalibrateArgs) -> anyhow::Result<Value> {
    let target = match (args.target_precision, args.max_answerable_loss) {
        (Some(p), _) if (0.0..=1.0).contains(&p) => Target::Precision(p),
        (Some(p), _) => bail!("--target-precision {p}: give a share between 0 and 1"),
        (None, Some(l)) if (0.0..1.0).contains(&l) => Target::AnswerableLoss(l),
        (None, Some(l)) => bail!("--max-answerable-loss {l}: give a share between 0 and 1"),
        (None, None) => Target::AnswerableLoss(0.10),
    };
    if args.squad.is_empty() && args.gold.is_empty() && args.signals.is_empty() {
        bail!("nothing to fit on: give --squad, --gold or --signals files");
    }
    let asked = collect(app, args).await?;
    if let Some(file) = &args.save_signals {
        crate::tools::eval::write_details(file, &asked, &Abstention::Never)?;
    }
    let calibration = fit(&asked, &args.features, target, fitted_with(app, args, &asked)?)?;
    calibration.save(&args.out)?;
    let abstention =
        Abstention::Calibrated { calibration: Arc::new(calibration.clone()), threshold: None, floor: None };
    Ok(json!({
        "out": args.out.display().to_string(),
        "questions": asked.len(),
        "right": asked.iter().filter(|a| a.right()).count(),
        "target": format!("{target:?}"),
        "combiners": calibration.combiners.iter().map(|c| json!({"stage": c.stage, "features": c.features, "threshold": c.threshold})).collect::<Vec<_>>(),
        "chosen": abstention_report(&asked, &abstention),
        "risk_coverage": risk_coverage(&asked, &calibration),
        "signals_alone": signals_alone(&asked),
    }))
}

/// Every question: asked now (SQuAD and gold files) or read back (`--signals`).
async fn collect(app: &App, args: &CalibrateArgs) -> anyhow::Result<Vec<Asked>> {
    let mut asked = Vec::new();
    for file in &args.signals {
        asked.extend(crate::tools::eval::read_details(file)?);
    }
    for (i, file) in args.squad.iter().enumerate() {
        let mut eval_args = EvalArgs::for_calibration(file.clone(), Some(args.bot.clone()), args.limit);
        eval_args.off_topic_limit = args.off_topic_limit;
        let off_topic = (args.squad.len() > 1).then(|| args.squad[(i + 1) % args.squad.len()].clone());
        let eval = Evaluation::new(app, &eval_args)?;
        eprintln!("calibrate: asking {}", file.display());
        asked.extend(eval.ask_file(file, off_topic.as_deref()).await?);
    }
    if !args.gold.is_empty() {
        let eval_args = EvalArgs::for_calibration(PathBuf::new(), Some(args.bot.clone()), None);
        let eval = Evaluation::new(app, &eval_args)?;
        asked.extend(crate::tools::gold::ask_gold_files(app, &eval, &args.bot, &args.gold).await?);
    }
    Ok(asked)
}

fn fitted_with(app: &App, args: &CalibrateArgs, asked: &[Asked]) -> anyhow::Result<FittedWith> {
    let place = crate::question::router::bot_place(&app.config, &args.bot)?;
    let m = &app.config.models;
    let count = |kind: Kind| asked.iter().filter(|a| a.kind == kind).count();
    let mut data: Vec<String> =
        args.squad.iter().chain(&args.gold).chain(&args.signals).map(|f| file_name(f)).collect();
    data.push(format!(
        "{} questions: {} answerable, {} unanswerable, {} off-topic",
        asked.len(),
        count(Kind::Answerable),
        count(Kind::Unanswerable),
        count(Kind::OffTopic)
    ));
    Ok(FittedWith {
        generator: m.generator.name(),
        embedder: m.embedder.name(),
        reranker_model: m.reranker.as_ref().map(|r| file_name(&r.path)),
        retriever: place.retrieval.retriever.name().to_string(),
        rerankers: place.retrieval.rerankers.iter().map(|r| r.name().to_string()).collect(),
        data,
        label: "right: the answer matches a gold answer (SQuAD F1 >= 0.5) or holds one word for word; unanswerable and off-topic questions have no right answer".into(),
    })
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// The combiners: before generating (retrieval signals) and after (all), each with and
/// without the signals that cost generator passes, and their thresholds.
fn fit(asked: &[Asked], only: &[String], target: Target, fitted_with: FittedWith) -> anyhow::Result<Calibration> {
    let right = asked.iter().filter(|a| a.right()).count();
    if right < 5 || right == asked.len() {
        bail!(
            "{right} of {} answers are right: fitting needs both right and wrong answers (at least 5 right)",
            asked.len()
        );
    }
    let chosen = |s: &&str| match only.is_empty() {
        true => signal::TRANSFERABLE.contains(s),
        false => only.iter().any(|o| o == s),
    };
    let measured: Vec<&str> = all_signals(asked).into_iter().filter(chosen).collect();
    if measured.is_empty() {
        bail!("none of the signals {only:?} was measured (measured: {})", all_signals(asked).join(", "));
    }
    let before: Vec<&str> = measured.iter().copied().filter(|s| signal::BEFORE.contains(s)).collect();
    let sets = [
        (Stage::Before, before.clone()),
        (Stage::Before, without_costly(&before)),
        (Stage::After, measured.clone()),
        (Stage::After, without_costly(&measured)),
    ];
    let mut combiners: Vec<Combiner> = Vec::new();
    for (stage, features) in sets {
        if features.is_empty() || combiners.iter().any(|c| c.stage == stage && c.features == features) {
            continue;
        }
        if let Some(c) = fit_one(asked, stage, &features)? {
            combiners.push(c);
        }
    }
    // Before-combiners first: the after-threshold is chosen with them in place.
    choose_thresholds(asked, &mut combiners, target);
    Ok(Calibration { lore_calibration: FORMAT, fitted_with, combiners })
}

fn without_costly<'a>(features: &[&'a str]) -> Vec<&'a str> {
    features.iter().copied().filter(|f| !signal::COSTLY.contains(f)).collect()
}

/// Signals measured for most questions (at least 90 %), in a stable order.
fn all_signals(asked: &[Asked]) -> Vec<&'static str> {
    const ALL: [&str; 13] = [
        signal::COSINE_TOP,
        signal::COSINE_GAP,
        signal::BM25_TOP,
        signal::RETRIEVER_TOP,
        signal::RERANK_TOP,
        signal::ANSWER_IN_PASSAGES,
        signal::ANSWER_SPAN,
        signal::ANSWER_IN_QUOTE,
        signal::SUPPORT,
        signal::LL_OPEN,
        signal::LL_CLOSED,
        signal::LL_GAIN,
        signal::ANSWER_WORDS,
    ];
    ALL.into_iter()
        .filter(|s| asked.iter().filter(|a| a.signals.get(s).is_some()).count() * 10 >= asked.len() * 9)
        .collect()
}

/// Logistic regression of "right" on `features` over the questions that have them all;
/// features that do not vary are left out. `None` when too few questions have them.
fn fit_one(asked: &[Asked], stage: Stage, features: &[&str]) -> anyhow::Result<Option<Combiner>> {
    let rows: Vec<(Vec<f64>, bool)> = asked
        .iter()
        .filter_map(|a| features.iter().map(|f| a.signals.get(f)).collect::<Option<Vec<f64>>>().map(|x| (x, a.right())))
        .collect();
    let positives = rows.iter().filter(|(_, y)| *y).count();
    if positives < 5 || positives == rows.len() {
        return Ok(None);
    }
    let n = rows.len() as f64;
    let mut kept = Vec::new();
    let (mut mean, mut scale) = (Vec::new(), Vec::new());
    for (j, name) in features.iter().enumerate() {
        let m = rows.iter().map(|(x, _)| x[j]).sum::<f64>() / n;
        let sd = (rows.iter().map(|(x, _)| (x[j] - m).powi(2)).sum::<f64>() / n).sqrt();
        if sd > 1e-9 {
            kept.push((j, *name));
            mean.push(m);
            scale.push(sd);
        }
    }
    if kept.is_empty() {
        return Ok(None);
    }
    let mut x = Array2::<f64>::zeros((rows.len(), kept.len()));
    for (i, (values, _)) in rows.iter().enumerate() {
        for (k, (j, _)) in kept.iter().enumerate() {
            x[[i, k]] = (values[*j] - mean[k]) / scale[k];
        }
    }
    let y: Array1<bool> = rows.iter().map(|(_, y)| *y).collect();
    // Strong L2 on standardised signals: a few hundred questions with few right answers
    // overfit one article otherwise (cross-article AUROC 0.56 at alpha 0.1, 0.81 at 10,
    // normans -> computational complexity; docs/EVAL.md).
    let model = LogisticRegression::default()
        .alpha(10.0)
        .max_iterations(500)
        .fit(&Dataset::new(x, y))
        .map_err(|e| anyhow::anyhow!("fitting the {stage:?} combiner on {features:?}: {e}"))?;
    // linfa models the probability of the label it saw first (not the larger one, as its
    // documentation says): turned round when that was "wrong".
    let sign = if model.labels().pos.class { 1.0 } else { -1.0 };
    Ok(Some(Combiner {
        stage,
        features: kept.iter().map(|(_, f)| f.to_string()).collect(),
        mean,
        scale,
        weights: model.params().iter().map(|w| sign * w).collect(),
        bias: sign * model.intercept(),
        threshold: 0.0,
    }))
}

/// Thresholds: each before-combiner keeps nearly every right answer (it only stops what
/// retrieval alone shows is hopeless, before any generation); each after-combiner then
/// meets the target together with the before-combiner of its kind.
fn choose_thresholds(asked: &[Asked], combiners: &mut [Combiner], target: Target) {
    let gate_target = match target {
        Target::AnswerableLoss(loss) => Target::AnswerableLoss(loss / 4.0),
        Target::Precision(_) => Target::AnswerableLoss(0.025),
    };
    for combiner in combiners.iter_mut().filter(|c| c.stage == Stage::Before) {
        combiner.threshold = best_threshold(asked, gate_target, |a, t| below(combiner, a, t));
    }
    for i in 0..combiners.len() {
        if combiners[i].stage != Stage::After {
            continue;
        }
        let costly = combiners[i].features.iter().any(|f| signal::COSTLY.contains(&f.as_str()));
        // The before-combiner used on the same turns: with costly signals or without.
        let gate = combiners
            .iter()
            .filter(|c| c.stage == Stage::Before)
            .filter(|c| costly || !c.features.iter().any(|f| signal::COSTLY.contains(&f.as_str())))
            .max_by_key(|c| c.features.len())
            .cloned();
        let after = combiners[i].clone();
        let t = best_threshold(asked, target, |a, t| {
            gate.as_ref().is_some_and(|g| below(g, a, g.threshold)) || below(&after, a, t)
        });
        combiners[i].threshold = t;
    }
}

/// Whether `combiner` withholds `a` at threshold `t` (a question it cannot judge is not
/// withheld by it).
fn below(combiner: &Combiner, a: &Asked, t: f64) -> bool {
    combiner.probability(&a.signals).is_some_and(|p| p < t)
}

/// The threshold that meets `target` with the most declined (answerable loss) or the most
/// answered (precision), from the probabilities seen; 0 (decline nothing) when none does.
fn best_threshold(asked: &[Asked], target: Target, declines: impl Fn(&Asked, f64) -> bool) -> f64 {
    let mut candidates: Vec<f64> = (1..100).map(|i| i as f64 / 100.0).collect();
    candidates.push(0.0);
    candidates.sort_by(f64::total_cmp);
    let hasans: Vec<&Asked> = asked.iter().filter(|a| a.kind == Kind::Answerable).collect();
    let baseline: f64 = hasans.iter().map(|a| f1_of(a)).sum();
    let kept = |t: f64| hasans.iter().filter(|a| !declines(a, t)).map(|a| f1_of(a)).sum::<f64>() / baseline.max(1e-9);
    let precision = |t: f64| {
        let answered: Vec<&Asked> = asked.iter().filter(|a| !a.answer.is_empty() && !declines(a, t)).collect();
        answered.iter().filter(|a| a.right()).count() as f64 / answered.len().max(1) as f64
    };
    match target {
        Target::AnswerableLoss(loss) => {
            candidates.iter().copied().filter(|&t| kept(t) >= 1.0 - loss - 1e-12).fold(0.0, f64::max)
        }
        Target::Precision(p) => candidates.iter().copied().find(|&t| precision(t) >= p).unwrap_or_else(|| {
            // Out of reach: the threshold with the best precision.
            candidates.iter().copied().max_by(|a, b| precision(*a).total_cmp(&precision(*b))).unwrap_or(0.0)
        }),
    }
}

/// The answer's F1 against its gold answers (0 for questions without one).
fn f1_of(a: &Asked) -> f64 {
    let golds: Vec<&str> = a.golds.iter().map(String::as_str).collect();
    crate::tools::eval::score(&a.answer, &golds, true).1
}

/// Answered share, precision, answerable F1 kept and the shares declined, at thresholds
/// from 0.05 to 0.95 (the after-combiner's; the before-combiner at its own).
fn risk_coverage(asked: &[Asked], calibration: &Calibration) -> Vec<Value> {
    (1..20)
        .map(|i| {
            let t = i as f64 * 0.05;
            let mut c = calibration.clone();
            for combiner in c.combiners.iter_mut().filter(|c| c.stage == Stage::After) {
                combiner.threshold = t;
            }
            let r = abstention_report(
                asked,
                &Abstention::Calibrated { calibration: Arc::new(c), threshold: None, floor: None },
            );
            json!({
                "threshold": t,
                "answered": r["answered"],
                "precision": r["precision"],
                "hasans_f1_kept": r["hasans_f1_kept"],
                "unanswerable_declined": r["unanswerable_declined"],
                "off_topic_declined": r["off_topic_declined"],
            })
        })
        .collect()
}

/// How well each signal alone separates right answers from the rest, and answerable
/// questions from the others (AUROC on the fitting data; cross-article figures come from
/// `lore eval --signals … --calibration` with a one-signal calibration).
fn signals_alone(asked: &[Asked]) -> Value {
    let right: Vec<bool> = asked.iter().map(Asked::right).collect();
    let answerable: Vec<bool> = asked.iter().map(|a| a.kind == Kind::Answerable).collect();
    let mut out = serde_json::Map::new();
    for name in all_signals(asked) {
        let values: Vec<f64> = asked.iter().map(|a| a.signals.get(name).unwrap_or(f64::MIN)).collect();
        out.insert(
            name.to_string(),
            json!({"auroc_right": crate::tools::eval::auroc(&values, &right), "auroc_answerable": crate::tools::eval::auroc(&values, &answerable)}),
        );
    }
    Value::Object(out)
}

/// Prints the report as a person reads it.
pub fn print_report(r: &Value) {
    println!("{}: {} questions, {} answers right", r["out"].as_str().unwrap_or(""), r["questions"], r["right"]);
    println!("  target: {}", r["target"].as_str().unwrap_or(""));
    for c in r["combiners"].as_array().into_iter().flatten() {
        let features: Vec<&str> = c["features"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        println!(
            "  {:<6} threshold {:.3}  {}",
            c["stage"].as_str().unwrap_or(""),
            c["threshold"].as_f64().unwrap_or(0.0),
            features.join(", ")
        );
    }
    println!("  at the chosen thresholds:");
    for (k, v) in r["chosen"].as_object().into_iter().flatten() {
        println!("    {k:<24} {:>8.3}", v.as_f64().unwrap_or(f64::NAN));
    }
    println!(
        "  risk–coverage (after-threshold: answered, precision, HasAns F1 kept, unanswerable / off-topic declined):"
    );
    for row in r["risk_coverage"].as_array().into_iter().flatten() {
        let f = |k: &str| row[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "    {:>5.2}  {:>6.3}  {:>6.3}  {:>6.3}  {:>6.3}  {:>6.3}",
            f("threshold"),
            f("answered"),
            f("precision"),
            f("hasans_f1_kept"),
            f("unanswerable_declined"),
            f("off_topic_declined")
        );
    }
    println!("  each signal alone (AUROC right / answerable, fitting data):");
    for (k, v) in r["signals_alone"].as_object().into_iter().flatten() {
        println!(
            "    {k:<20} {:>6.3}  {:>6.3}",
            v["auroc_right"].as_f64().unwrap_or(f64::NAN),
            v["auroc_answerable"].as_f64().unwrap_or(f64::NAN)
        );
    }
}

/// Signals that would change the judgement if the bot's models differ from the ones a
/// calibration was fitted with: what `lore check` warns about.
pub fn differences(
    calibration: &Calibration,
    config: &crate::config::Config,
    place: &crate::question::router::Place,
) -> Vec<String> {
    let f = &calibration.fitted_with;
    let m = &config.models;
    let mut out = Vec::new();
    let mut differ = |what: &str, fitted: &str, now: &str| {
        if fitted != now {
            out.push(format!("{what}: fitted with {fitted}, now {now}"));
        }
    };
    differ("generator", &f.generator, &m.generator.name());
    differ("embedder", &f.embedder, &m.embedder.name());
    let reranker_model = m.reranker.as_ref().map(|r| file_name(&r.path)).unwrap_or_else(|| "none".into());
    differ("reranker model", f.reranker_model.as_deref().unwrap_or("none"), &reranker_model);
    differ("retriever", &f.retriever, place.retrieval.retriever.name());
    let rerankers: Vec<String> = place.retrieval.rerankers.iter().map(|r| r.name().to_string()).collect();
    differ("rerankers", &f.rerankers.join(", "), &rerankers.join(", "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::question::confidence::Signals;

    /// Questions whose answers are right exactly when `support` is high, with a noise
    /// signal beside it.
    fn questions() -> Vec<Asked> {
        (0..200)
            .map(|i| {
                let support = (i % 20) as f64 / 20.0;
                let right = support > 0.6;
                let kind = match i % 3 {
                    0 | 1 => Kind::Answerable,
                    _ => Kind::Unanswerable,
                };
                let right = right && kind == Kind::Answerable;
                let mut signals = Signals::default();
                signals.set(signal::ANSWER_IN_QUOTE, support);
                signals.set(signal::COSINE_TOP, ((i * 7919) % 100) as f64 / 100.0);
                Asked {
                    id: i.to_string(),
                    question: "?".into(),
                    kind,
                    golds: if kind == Kind::Answerable { vec!["France".into()] } else { vec![] },
                    gold_rank: None,
                    source: None,
                    evidence: Some(0.5),
                    top_score: None,
                    answer: if right { "France".into() } else { "Spain".into() },
                    quote: None,
                    signals,
                    latency_ms: 0.0,
                    judge_ms: 0.0,
                }
            })
            .collect()
    }

    #[test]
    fn the_fitted_combiner_leans_on_the_signal_that_predicts_and_thresholds_keep_the_target() {
        let asked = questions();
        let c = fit(&asked, &[], Target::AnswerableLoss(0.1), FittedWith::default()).unwrap();
        let after = c.combiners.iter().find(|c| c.stage == Stage::After && c.features.len() == 2).unwrap();
        let w = |name: &str| after.weights[after.features.iter().position(|f| f == name).unwrap()];
        assert!(w(signal::ANSWER_IN_QUOTE) > 1.0, "{after:?}");
        assert!(w(signal::ANSWER_IN_QUOTE) > 5.0 * w(signal::COSINE_TOP).abs(), "{after:?}");
        let report = abstention_report(
            &asked,
            &Abstention::Calibrated { calibration: Arc::new(c.clone()), threshold: None, floor: None },
        );
        assert!(report["hasans_f1_kept"].as_f64().unwrap() >= 0.9, "{report}");
        assert!(report["unanswerable_declined"].as_f64().unwrap() > 0.6, "{report}");
        // Unanswerable questions with high support are never right: not perfectly separable.
        assert!(report["auroc_right"].as_f64().unwrap() > 0.85, "{report}");
    }

    #[test]
    fn a_higher_threshold_never_answers_more() {
        let asked = questions();
        let c = fit(&asked, &[], Target::AnswerableLoss(0.1), FittedWith::default()).unwrap();
        let rows = risk_coverage(&asked, &c);
        for pair in rows.windows(2) {
            assert!(pair[1]["answered"].as_f64() <= pair[0]["answered"].as_f64(), "{pair:?}");
        }
        let strict = fit(&asked, &[], Target::Precision(0.99), FittedWith::default()).unwrap();
        let report = abstention_report(
            &asked,
            &Abstention::Calibrated { calibration: Arc::new(strict), threshold: None, floor: None },
        );
        assert!(report["precision"].as_f64().unwrap() >= 0.99, "{report}");
    }

    #[test]
    fn fitting_refuses_data_without_right_answers_and_unknown_signals() {
        let mut asked = questions();
        for a in &mut asked {
            a.answer = "Spain".into();
        }
        let error = fit(&asked, &[], Target::AnswerableLoss(0.1), FittedWith::default()).unwrap_err().to_string();
        assert!(error.contains("0 of 200 answers are right"), "{error}");
        let error =
            fit(&questions(), &["nonsense".into()], Target::AnswerableLoss(0.1), FittedWith::default()).unwrap_err();
        assert!(error.to_string().contains("none of the signals"), "{error}");
    }
}
