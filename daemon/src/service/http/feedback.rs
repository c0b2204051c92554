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

use super::openai::ApiError;
use super::{Caller, Shared};
use crate::question::feedback::{FeedbackError, MAX_COMMENT_CHARS};

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
    let request = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(rejection.status(), "request_too_large", rejection.body_text()),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!(
                "{} (a vote is {{\"id\": the answer's id, \"rating\": \"up\" or \"down\", \"comment\": optional}})",
                rejection.body_text()
            ),
        ),
    })?;
    let FeedbackRequest { id, rating, comment } = request.0;
    if comment.as_ref().is_some_and(|c| c.chars().count() > MAX_COMMENT_CHARS) {
        let message = format!("comment: at most {MAX_COMMENT_CHARS} characters");
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message));
    }
    let answer_id = id.strip_prefix("chatcmpl-").unwrap_or(&id);
    let not_found = || {
        let message = format!(
            "no answer `{id}` is kept (answers of bots are kept for feedback_days; the generator's own are not)"
        );
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    };
    if answer_id.is_empty() || !answer_id.bytes().all(|b| b.is_ascii_alphanumeric()) || answer_id.len() > 40 {
        return Err(not_found());
    }
    let Some(feedback) = &server.api.feedback else { return Err(not_found()) };
    let answer = feedback.answer(answer_id).await.map_err(|e| ApiError::from_answer(&e))?;
    let answer = answer.filter(|a| caller.may_use(&a.bot)).ok_or_else(not_found)?;
    let vote = server.api.bots.vote(&answer.bot, answer_id, &caller.id, rating, comment.as_deref()).await;
    let vote = vote.map_err(|e| match e {
        FeedbackError::NotKept | FeedbackError::UnknownAnswer(_) | FeedbackError::OtherBot { .. } => not_found(),
        other => ApiError::from_answer(&other.into()),
    })?;
    Ok(Json(json!({
        "object": "lore.feedback",
        "id": id,
        "bot": answer.bot,
        "rating": vote.rating,
        "comment": vote.comment,
    })))
}
