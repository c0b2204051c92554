//! `line:` (once `admission:`): how questions from many people at once are let in.

use serde::Deserialize;

use super::{Config, ConfigError};

/// The line of questions: one place in line per question, answered `parallel`
/// (`models.generator.parallel`) at a time, people taking turns.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineSettings {
    /// Questions that may wait for their turn; beyond this a question is refused with a
    /// short notice.
    #[serde(default = "default_max_waiting_questions")]
    pub max_waiting_questions: usize,
    /// Questions to bots one person (a chat user, or an API key) may have waiting at once;
    /// one more is refused politely ("you already have 3 questions waiting"), so nobody can
    /// fill the line and lock everyone else out. Requests for the generator itself (another
    /// Lore using this one as its engine) are not capped so.
    #[serde(default = "default_max_waiting_per_person")]
    pub max_waiting_per_person: usize,
    /// Answers in progress per person; their further questions wait behind other
    /// people's. Requests for the generator itself are not capped so: another Lore using
    /// this one as its engine sends all its people's questions under one key.
    #[serde(default = "default_per_user_in_flight")]
    pub per_user_in_flight: usize,
    /// At most this many questions per person in a time window; more get a polite notice.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Whether questions that had to wait still get the `llm` reranker (it costs one
    /// prompt-sized pass per candidate). Off: when others are waiting, it is skipped so
    /// the line moves faster.
    #[serde(default)]
    pub rerank_when_busy: bool,
}

impl Default for LineSettings {
    fn default() -> Self {
        Self {
            max_waiting_questions: default_max_waiting_questions(),
            max_waiting_per_person: default_max_waiting_per_person(),
            per_user_in_flight: default_per_user_in_flight(),
            rate_limit: None,
            rerank_when_busy: false,
        }
    }
}

fn default_max_waiting_questions() -> usize {
    64
}
fn default_max_waiting_per_person() -> usize {
    3
}
fn default_per_user_in_flight() -> usize {
    1
}

/// `questions` per `per_secs`, per person.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Questions allowed in the window.
    pub questions: usize,
    /// The window, in seconds (also read as `per_seconds`, its older spelling).
    #[serde(alias = "per_seconds")]
    pub per_secs: u64,
}

impl Config {
    /// `line`: every limit lets at least one question through.
    pub(super) fn check_line(&self) -> Result<(), ConfigError> {
        let a = &self.line;
        if a.per_user_in_flight == 0 {
            return Err(self.error("line.per_user_in_flight", "must be at least 1"));
        }
        if a.max_waiting_per_person == 0 {
            return Err(self.error("line.max_waiting_per_person", "must be at least 1"));
        }
        if let Some(r) = &a.rate_limit {
            if r.questions == 0 || r.per_secs == 0 {
                return Err(self.error("line.rate_limit", "questions and per_secs must be at least 1"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{parse, OK};
    use super::*;

    #[test]
    fn line_defaults_and_limits() {
        let cfg = parse(OK).unwrap();
        assert_eq!(cfg.line, LineSettings::default());
        assert_eq!(cfg.line.max_waiting_questions, 64);
        let text = OK.to_string() + "line:\n  rate_limit: {questions: 0, per_secs: 60}\n";
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key, "line.rate_limit", "{e}");
    }

    #[test]
    fn the_rate_limits_window_is_in_secs_and_its_older_spelling_still_reads() {
        for key in ["per_secs", "per_seconds"] {
            let cfg = parse(&format!("{OK}line:\n  rate_limit: {{questions: 2, {key}: 60}}\n")).unwrap();
            assert_eq!(cfg.line.rate_limit, Some(RateLimit { questions: 2, per_secs: 60 }), "{key}");
        }
    }

    #[test]
    fn the_older_section_name_admission_still_reads() {
        let cfg = parse(&format!("{OK}admission:\n  max_waiting_per_person: 5\n")).unwrap();
        assert_eq!(cfg.line.max_waiting_per_person, 5);
    }
}
