//! A bot's gold questions: the file format (`lore calibrate --gold`, `lore eval --gold`,
//! `lore gold export`/`import`), asking them through the bot's own chain, the report
//! `lore eval --gold` prints, and the regression gate that compares it with an earlier one
//! (`--baseline`, `--max-drop`).
//!
//! The format is JSON Lines, one case a line:
//! `{"question": "…", "answer": "…" or null, "source": "file.md" (optional), "lines": [12, 13]
//! (optional), "id": "…" (optional)}`.
//! `answer: null` means the documents do not cover the question: the bot should abstain.
//! `source` names where the answer is (a file name or address, matched as the end of a
//! passage's source); `lines`, the lines of it that answer (a passage must cover one of
//! them to count). With sources, the report adds retrieval recall@1/5/20 and MRR.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::app::App;
pub(crate) use crate::question::feedback::GoldCase;
use crate::question::feedback::{now_ms, Feedback, StoredGold};
use crate::tools::eval::{scored, Abstention, Asked, Evaluation, Kind, Scored};

/// Every case of `file`, or which line is not one.
pub(crate) fn read_gold(file: &Path) -> anyhow::Result<Vec<GoldCase>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| {
                format!(
                    "{}:{}: a gold case is {{\"question\": …, \"answer\": … or null, \"source\": optional}}",
                    file.display(),
                    i + 1
                )
            })
        })
        .collect()
}

/// Asks every case of `files` of bot `bot`'s own chain (its knowledge base, rerankers and
/// prompt), as `eval` asks.
pub(crate) async fn ask_gold_files(
    app: &App,
    eval: &Evaluation<'_>,
    bot: &str,
    files: &[PathBuf],
) -> anyhow::Result<Vec<Asked>> {
    let mut place = crate::question::router::bot_place(&app.config, bot)?;
    // The run's retrieval: the bot's, with what the command line changed (`--retriever`,
    // `--no-rerank`, the top 20 for recall@20).
    place.retrieval = eval.retrieval().clone();
    let chain = app.chain(place)?;
    let mut asked = Vec::new();
    for file in files {
        for (line, case) in read_gold(file)?.into_iter().enumerate() {
            let id = case.id.clone().unwrap_or_else(|| format!("{}:{}", file.display(), line + 1));
            asked.push(eval.ask_gold(&chain, id, &case).await?);
        }
    }
    Ok(asked)
}

/// The figures a regression gate compares; higher is better for each.
pub const GATED: [&str; 4] = ["exact", "f1", "abstention_accuracy", "citation_accuracy"];

/// What `lore eval --gold` reports: exact match and F1 on the cases with an answer (an
/// abstention scores 0), how often the bot abstained where the documents do not cover
/// the question, and how often the named source was among the passages an answer was
/// given from. A figure with no case to measure it on is `null`.
pub fn gold_report(asked: &[Asked], abstention: &Abstention, passages: usize) -> Value {
    let mean = |values: Vec<f64>| (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
    let answerable: Vec<(&Asked, Scored)> =
        asked.iter().filter(|a| a.kind == Kind::Answerable).map(|a| (a, scored(a, abstention))).collect();
    let no_answer: Vec<&Asked> = asked.iter().filter(|a| a.kind != Kind::Answerable).collect();
    // Answers given to cases that name a source: was that source before the question?
    let cited: Vec<f64> = answerable
        .iter()
        .filter(|(a, s)| a.source.is_some() && !s.abstained)
        .map(|(a, _)| if a.gold_rank.is_some_and(|r| r <= passages) { 1.0 } else { 0.0 })
        .collect();
    // Retrieval of the named source (its lines, when the case names them), best first.
    let located: Vec<&Asked> = answerable.iter().filter(|(a, _)| a.source.is_some()).map(|(a, _)| *a).collect();
    let recall_at =
        |k: usize| mean(located.iter().map(|a| if a.gold_rank.is_some_and(|r| r <= k) { 1.0 } else { 0.0 }).collect());
    json!({
        "questions": asked.len(),
        "answerable": answerable.len(),
        "no_answer": no_answer.len(),
        "exact": mean(answerable.iter().map(|(_, s)| s.exact).collect()),
        "f1": mean(answerable.iter().map(|(_, s)| s.f1).collect()),
        "answered": mean(answerable.iter().map(|(_, s)| if s.abstained { 0.0 } else { 1.0 }).collect()),
        "abstention_accuracy": mean(no_answer.iter().map(|a| if abstention.declines(a) { 1.0 } else { 0.0 }).collect()),
        "with_source": cited.len(),
        "citation_accuracy": mean(cited),
        "recall@1": recall_at(1),
        "recall@5": recall_at(5),
        "recall@20": recall_at(20),
        "mrr": mean(located.iter().map(|a| a.gold_rank.map_or(0.0, |r| 1.0 / r as f64)).collect()),
    })
}

/// Fails, naming each figure, when `now` is more than `max_drop` below `baseline` (an
/// earlier `lore eval --gold --json` report) on any of [`GATED`].
pub fn check_baseline(now: &Value, baseline_file: &Path, max_drop: f64) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(baseline_file).with_context(|| format!("cannot read {}", baseline_file.display()))?;
    let baseline: Value = serde_json::from_str(text.trim())
        .with_context(|| format!("{}: not a report of `lore eval --gold --json`", baseline_file.display()))?;
    if GATED.iter().all(|key| baseline.get(key).is_none()) {
        bail!(
            "{}: none of {} in it: not a report of `lore eval --gold --json`",
            baseline_file.display(),
            GATED.join(", ")
        );
    }
    let drops = dropped(now, &baseline, max_drop);
    if !drops.is_empty() {
        bail!("worse than {} by more than --max-drop {max_drop}: {}", baseline_file.display(), drops.join("; "));
    }
    Ok(())
}

/// Each gated figure of `now` more than `max_drop` below `baseline`'s, in words.
fn dropped(now: &Value, baseline: &Value, max_drop: f64) -> Vec<String> {
    GATED
        .iter()
        .filter_map(|key| {
            let (before, after) = (baseline.get(key)?.as_f64()?, now.get(key)?.as_f64()?);
            (before - after > max_drop).then(|| format!("{key} dropped from {before:.3} to {after:.3}"))
        })
        .collect()
}

/// The report, for people.
pub fn print_gold_report(r: &Value) {
    let figure = |key: &str| r[key].as_f64().map_or("-".to_string(), |v| format!("{v:.3}"));
    println!("gold questions        {}", r["questions"]);
    println!(
        "  with an answer      {}  (exact {}, F1 {}, answered {})",
        r["answerable"],
        figure("exact"),
        figure("f1"),
        figure("answered")
    );
    println!("  not covered         {}  (abstained on {})", r["no_answer"], figure("abstention_accuracy"));
    println!("  naming a source     {}  (source among the passages {})", r["with_source"], figure("citation_accuracy"));
    println!(
        "  source retrieved    recall@1 {}, recall@5 {}, recall@20 {}, MRR {}",
        figure("recall@1"),
        figure("recall@5"),
        figure("recall@20"),
        figure("mrr")
    );
}

/// `lore gold`: the gold cases kept beside the knowledge bases, made by admins with
/// `/correct` (in the chats or on the quality page), out to a file and back.
#[derive(Debug, Clone, Args)]
pub struct GoldArgs {
    #[command(subcommand)]
    pub command: GoldCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum GoldCommand {
    /// Write a bot's gold cases to stdout, one JSON line each (the format `lore eval
    /// --gold` reads), oldest first.
    Export {
        #[arg(long)]
        bot: String,
        /// Only cases made on or after this day (YYYY-MM-DD, UTC).
        #[arg(long, value_parser = crate::calendar::day_start_ms)]
        since: Option<i64>,
    },
    /// Keep the cases of a gold file as a bot's (a case with the id of a kept one
    /// replaces it).
    Import {
        #[arg(long)]
        bot: String,
        file: PathBuf,
    },
}

/// Runs `lore gold`: needs the data directory, no model.
pub async fn run(config: &crate::config::Config, args: &GoldArgs) -> anyhow::Result<()> {
    let bot = match &args.command {
        GoldCommand::Export { bot, .. } | GoldCommand::Import { bot, .. } => bot,
    };
    config.bot(bot)?;
    let store = crate::app::open_store(config).await?;
    let feedback = Feedback::open(&store, &config.feedback_salt_file(), config.feedback_age())?;
    match &args.command {
        GoldCommand::Export { since, .. } => {
            let mut out = String::new();
            for gold in feedback.gold(Some(bot), *since).await? {
                out.push_str(&serde_json::to_string(&gold.case())?);
                out.push('\n');
            }
            use std::io::Write;
            std::io::stdout().lock().write_all(out.as_bytes())?;
            Ok(())
        }
        GoldCommand::Import { file, .. } => {
            let cases = read_gold(file)?;
            let time_ms = now_ms();
            let stored: Vec<StoredGold> = cases.into_iter().map(|case| imported(bot, case, time_ms)).collect();
            feedback.put_gold(&stored).await?;
            eprintln!(
                "{}: {} gold case{} kept for bot {bot}",
                file.display(),
                stored.len(),
                if stored.len() == 1 { "" } else { "s" }
            );
            Ok(())
        }
    }
}

/// A case of a file as kept: its own id, else one made of its question (so importing a
/// file twice keeps each case once).
fn imported(bot: &str, case: GoldCase, time_ms: i64) -> StoredGold {
    use sha2::{Digest, Sha256};
    let key = case.id.clone().unwrap_or_else(|| {
        let digest = Sha256::digest(format!("{bot}\0{}", case.question).as_bytes());
        digest[..6].iter().map(|b| format!("{b:02x}")).collect()
    });
    StoredGold {
        bot: bot.to_string(),
        question: case.question,
        answer: case.answer,
        source: case.source,
        answer_id: None,
        time_ms,
        key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_past_the_allowance_is_named_and_one_within_it_or_unmeasured_is_not() {
        let baseline = json!({"exact": 0.5, "f1": 0.70, "abstention_accuracy": 0.9, "citation_accuracy": null});
        let now = json!({"exact": 0.49, "f1": 0.60, "abstention_accuracy": 1.0, "citation_accuracy": 0.2});
        assert_eq!(dropped(&now, &baseline, 0.02), ["f1 dropped from 0.700 to 0.600"]);
        assert!(dropped(&now, &baseline, 0.2).is_empty());
        assert!(dropped(&baseline, &baseline, 0.0).is_empty());
    }

    #[test]
    fn a_baseline_that_is_not_a_gold_report_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("old.json");
        std::fs::write(&file, r#"{"recall@1": 0.5}"#).unwrap();
        let e = check_baseline(&json!({"f1": 0.5}), &file, 0.02).unwrap_err().to_string();
        assert!(e.contains("old.json") && e.contains("not a report"), "{e}");
        std::fs::write(&file, "{").unwrap();
        assert!(check_baseline(&json!({}), &file, 0.02).is_err());
    }

    #[test]
    fn a_gold_line_that_is_not_a_case_is_named_by_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gold.jsonl");
        std::fs::write(&file, "{\"question\": \"Why?\", \"answer\": null}\n\n{\"question\": 3}\n").unwrap();
        let e = format!("{:#}", read_gold(&file).unwrap_err());
        assert!(e.contains("gold.jsonl:3"), "{e}");
    }
}
