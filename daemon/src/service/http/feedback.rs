//! `POST /v1/feedback {id, rating, comment?}`: a 👍 (`"up"`) or 👎 (`"down"`) on an answer
//! the API (or the chat page) gave, named by the `id` of its response. One vote per key
//! and answer: a second replaces the first. Only a key that may use the answer's bot may
//! vote on it; to any other, the answer does not exist.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use lore_core::Rating;
use serde::Deserialize;
use serde_json::{json, Value};

use super::openai::{parse_shaped, ApiError};
use super::{Caller, Shared};
use crate::question::feedback::{AnswerRecord, Feedback, FeedbackError, MAX_COMMENT_CHARS};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FeedbackRequest {
    /// The response's id (`chatcmpl-…`), or the bare answer id the chat sources carry.
    id: String,
    rating: Rating,
    #[serde(default)]
    comment: Option<String>,
}

pub(super) async fn feedback(
    State(server): State<Shared>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<FeedbackRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let shape = r#"a vote is {"id": the answer's id, "rating": "up" or "down", "comment": optional}"#;
    let FeedbackRequest { id, rating, comment } = parse_shaped(body, shape)?;
    if comment.as_ref().is_some_and(|c| c.chars().count() > MAX_COMMENT_CHARS) {
        return Err(ApiError::bad_request(format!("comment: at most {MAX_COMMENT_CHARS} characters")));
    }
    let (_, answer) = named_answer(&server, &caller, &id).await?;
    let vote = server.api.bots.vote(&answer.bot, &answer.id, &caller.id, rating, comment.as_deref()).await;
    let vote = vote.map_err(|e| not_found_unless_failed(e, &id))?;
    Ok(Json(json!({
        "object": "lore.feedback",
        "id": id,
        "bot": answer.bot,
        "rating": vote.rating,
        "comment": vote.comment,
    })))
}

/// The kept answer that `id` names (a response's `chatcmpl-…` id, or the bare answer id)
/// and the store it is kept in, when the caller's key may use its bot. Anyone else, and an
/// id that names no kept answer, gets the same 404.
pub(super) async fn named_answer<'a>(
    server: &'a Shared,
    caller: &Caller,
    id: &str,
) -> Result<(&'a Feedback, AnswerRecord), ApiError> {
    let answer_id = id.strip_prefix("chatcmpl-").unwrap_or(id);
    if answer_id.is_empty() || !answer_id.bytes().all(|b| b.is_ascii_alphanumeric()) || answer_id.len() > 40 {
        return Err(not_found(id));
    }
    let Some(feedback) = server.api.feedback.as_deref() else { return Err(not_found(id)) };
    let answer = feedback.answer(answer_id).await.map_err(|e| ApiError::from_answer(&e))?;
    let answer = answer.filter(|a| caller.may_use(&a.bot)).ok_or_else(|| not_found(id))?;
    Ok((feedback, answer))
}

/// What storing feedback on answer `id` failing means to the caller: no such answer (a
/// 404, as [`named_answer`] says it), or the store's failure.
pub(super) fn not_found_unless_failed(error: FeedbackError, id: &str) -> ApiError {
    match error {
        FeedbackError::NotKept | FeedbackError::UnknownAnswer(_) | FeedbackError::OtherBot { .. } => not_found(id),
        other => ApiError::from_answer(&other.into()),
    }
}

fn not_found(id: &str) -> ApiError {
    let message =
        format!("no answer `{id}` is kept (answers of bots are kept for feedback_days; the generator's own are not)");
    ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
}
