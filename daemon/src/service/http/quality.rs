//! The quality page: `GET /quality` (the page itself, like the chat page: what it shows
//! comes through the API with the caller's key), `GET /v1/quality?days=N` (the figures,
//! gaps and review queue of the bots the key may use; `service::quality` computes them)
//! and `POST /v1/gold {id, answer, source?}` (an admin's correction from the review queue:
//! a gold case of that answer's question, as `/correct` makes in a chat).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Html;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::feedback::{named_answer, not_found_unless_failed};
use super::openai::{parse_shaped, ApiError};
use super::{Caller, Shared};
use crate::question::feedback::{now_ms, Correction, Feedback, MAX_COMMENT_CHARS};

/// Days the page shows unless asked, and at most.
const DEFAULT_DAYS: usize = 14;
const MAX_DAYS: usize = 365;

pub(super) async fn page() -> Html<&'static str> {
    Html(include_str!("quality.html"))
}

#[derive(Deserialize)]
pub(super) struct QualityQuery {
    days: Option<usize>,
}

pub(super) async fn figures(
    State(server): State<Shared>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<QualityQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let days = match query {
        Ok(Query(QualityQuery { days: None })) => DEFAULT_DAYS,
        Ok(Query(QualityQuery { days: Some(days) })) if (1..=MAX_DAYS).contains(&days) => days,
        _ => return Err(ApiError::bad_request(format!("days: a whole number from 1 to {MAX_DAYS}"))),
    };
    let feedback = kept(&server)?;
    let now = now_ms();
    let since = now - (days as i64 - 1) * 86_400_000;
    let since = since - since.rem_euclid(86_400_000);
    let failed = |e: anyhow::Error| ApiError::from_answer(&e);
    let answers = feedback.answers(None, Some(since)).await.map_err(failed)?;
    let votes = feedback.votes(None, Some(since)).await.map_err(failed)?;
    let gold = feedback.gold(None, None).await.map_err(failed)?;
    let may_see = |bot: &str| caller.may_use(bot) && server.api.bots.has_bot(bot);
    let mut report = crate::service::quality::report(&answers, &votes, &gold, now, days, may_see);
    let visible: Vec<_> = answers.into_iter().filter(|a| may_see(&a.bot)).collect();
    let embedder = server.api.embedder.embedder.as_ref();
    report.gaps = crate::service::quality::gaps(&visible, &votes, embedder).await.map_err(failed)?;
    Ok(Json(json!(report)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GoldRequest {
    /// The answer corrected (the review queue's `id`, or a response's `chatcmpl-…` id).
    id: String,
    /// The right answer; `null` when the documents do not cover the question.
    answer: Option<String>,
    #[serde(default)]
    source: Option<String>,
}

pub(super) async fn correct(
    State(server): State<Shared>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<GoldRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let shape = r#"a correction is {"id": the answer's id, "answer": the right answer or null, "source": optional}"#;
    let GoldRequest { id, answer, source } = parse_shaped(body, shape)?;
    if answer.as_ref().is_some_and(|a| a.trim().is_empty()) {
        return Err(ApiError::bad_request("answer: empty; send null when the documents do not cover the question"));
    }
    let too_long = |t: &Option<String>| t.as_ref().is_some_and(|t| t.chars().count() > MAX_COMMENT_CHARS);
    if too_long(&answer) || too_long(&source) {
        return Err(ApiError::bad_request(format!("answer and source: at most {MAX_COMMENT_CHARS} characters each")));
    }
    let (feedback, kept) = named_answer(&server, &caller, &id).await?;
    let correction = Correction {
        answer: answer.map(|a| a.trim().to_string()),
        source: source.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()),
    };
    let gold = feedback.correct(&kept.bot, &kept.id, &correction).await;
    let gold = gold.map_err(|e| not_found_unless_failed(e, &id))?;
    tracing::info!(answer = kept.id, no_answer = gold.answer.is_none(), "gold case made on the quality page");
    Ok(Json(json!({
        "object": "lore.gold",
        "id": gold.key,
        "bot": gold.bot,
        "question": gold.question,
        "answer": gold.answer,
        "source": gold.source,
    })))
}

fn kept(server: &Shared) -> Result<&Feedback, ApiError> {
    server.api.feedback.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this daemon keeps no answers or votes (`lore run` and `lore serve` do)",
        )
    })
}
