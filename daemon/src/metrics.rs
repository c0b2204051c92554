//! What `/metrics` reports, in Prometheus' text format (the `metrics` crate's macros, the
//! `metrics-exporter-prometheus` recorder). Counters and histograms are recorded where
//! things happen; gauges of state (the line, knowledge-base rows) are read when scraped.
//!
//! Names: `lore_questions_total`, `lore_answers_total`, `lore_abstentions_total`,
//! `lore_refusals_total`, `lore_errors_total` (labels `bot`, `platform`, `channel`),
//! `lore_votes_total` (those and `rating`: `up` or `down`); histograms `lore_retrieval_seconds`,
//! `lore_first_token_seconds`, `lore_answer_seconds` (label `bot`); counter
//! `lore_generated_tokens_total`; gauges `lore_waiting_questions`,
//! `lore_answers_in_progress`, `lore_kv_cells`, `lore_kv_cells_in_use` (prompts kept for reuse
//! included), `lore_knowledge_base_rows` (label `kb`, read at most every 15 s),
//! `lore_http_connections` (open now); counter `lore_http_connections_refused_total`
//! (label `reason`).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Histogram buckets in seconds: from a fast retrieval to a long answer on a CPU.
const BUCKETS: [f64; 12] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The process-wide recorder, installed on first use. (Tests run several daemons in one
/// process; they share it.)
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().set_buckets(&BUCKETS).expect("buckets are not empty").build_recorder();
        let handle = recorder.handle();
        // Fails only when another recorder was installed first; then that one gets the data.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
        }
        handle
    })
}

/// The platform a conversation is on: adapters start its key with their name.
pub fn platform(conversation: &str) -> &str {
    conversation.split(':').next().unwrap_or("unknown")
}

/// Where a question was asked, as the counters label it. `channel` is the bot's
/// configured channel it was answered in, else `default`: a label per chat would grow
/// without bound, and a private chat's id is its person's.
#[derive(Debug, Clone, Copy)]
pub struct Labels<'a> {
    pub bot: &'a str,
    pub platform: &'a str,
    pub channel: &'a str,
}

impl Labels<'_> {
    fn pairs(&self) -> [(&'static str, String); 3] {
        [("bot", self.bot.to_string()), ("platform", self.platform.to_string()), ("channel", self.channel.to_string())]
    }
}

pub fn question(at: &Labels) {
    metrics::counter!("lore_questions_total", &at.pairs()).increment(1);
}

pub fn refusal(at: &Labels) {
    metrics::counter!("lore_refusals_total", &at.pairs()).increment(1);
}

/// A 👍 (`up`) or 👎 (`down`) recorded (a changed vote counts again).
pub fn vote(at: &Labels, rating: &str) {
    let [bot, platform, channel] = at.pairs();
    metrics::counter!("lore_votes_total", &[bot, platform, channel, ("rating", rating.to_string())]).increment(1);
}

pub fn error(at: &Labels) {
    metrics::counter!("lore_errors_total", &at.pairs()).increment(1);
}

/// What `/metrics` counts of one answer that ended (given or abstained).
#[derive(Debug, Clone, Copy)]
pub struct Answered {
    pub abstained: bool,
    pub retrieval_time: Duration,
    pub first_token: Option<Duration>,
    pub total_time: Duration,
    pub generated_tokens: usize,
}

/// An answer that ended (given or abstained).
pub fn answered(at: &Labels, outcome: Answered) {
    let bot = at.bot;
    if outcome.abstained {
        metrics::counter!("lore_abstentions_total", &at.pairs()).increment(1);
    } else {
        metrics::counter!("lore_answers_total", &at.pairs()).increment(1);
    }
    metrics::histogram!("lore_retrieval_seconds", "bot" => bot.to_string())
        .record(outcome.retrieval_time.as_secs_f64());
    if let Some(first) = outcome.first_token {
        metrics::histogram!("lore_first_token_seconds", "bot" => bot.to_string()).record(first.as_secs_f64());
    }
    metrics::histogram!("lore_answer_seconds", "bot" => bot.to_string()).record(outcome.total_time.as_secs_f64());
    metrics::counter!("lore_generated_tokens_total", "bot" => bot.to_string())
        .increment(outcome.generated_tokens as u64);
}

/// State read when scraped.
pub fn gauge(name: &'static str, value: f64) {
    metrics::gauge!(name).set(value);
}

/// An HTTP connection not served: over `max_connections` or `max_connections_per_ip`, or
/// one the system could not accept (`accept_failed`: out of file descriptors, say).
pub fn connection_refused(reason: &'static str) {
    metrics::counter!("lore_http_connections_refused_total", "reason" => reason).increment(1);
}

pub fn kb_rows(kb: &str, rows: usize) {
    metrics::gauge!("lore_knowledge_base_rows", "kb" => kb.to_string()).set(rows as f64);
}
