//! `GET /v1/sources/{id}?model=BOT`: the stored passage an answer cited, so a person can
//! read exactly what the bot used. Read only from the knowledge base the bot answers from
//! through the API, and only with a key that may use that bot: an id alone opens nothing
//! in another bot's notes.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::openai::ApiError;
use super::state::Passage;
use super::{Caller, Shared};

#[derive(Deserialize)]
pub(super) struct SourceQuery {
    model: String,
}

/// Where a source's passage is read: `/v1/sources/{id}?model={bot}`.
pub(super) fn url(id: &str, bot: &str) -> String {
    let bot: String = url::form_urlencoded::byte_serialize(bot.as_bytes()).collect();
    format!("/v1/sources/{id}?model={bot}")
}

pub(super) async fn source(
    State(server): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    query: Result<Query<SourceQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(SourceQuery { model }) = query.map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", "say whose source this is: ?model=BOT")
    })?;
    if !server.api.bots.has_bot(&model) || !caller.may_use(&model) {
        return Err(ApiError::unknown_model(&model));
    }
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("`{model}` has no passage `{id}` (it may have been re-ingested since)"),
        )
    };
    let passage = server.api.sources.passage(&model, &id).await.map_err(|e| ApiError::from_answer(&e))?;
    let Passage { chunk, source } = passage.ok_or_else(not_found)?;
    let lines = (chunk.line_start > 0).then(|| json!([chunk.line_start, chunk.line_end]));
    Ok(Json(json!({
        "object": "lore.source",
        "id": chunk.id,
        "model": model,
        "source": source,
        "location": chunk.location(),
        "page": chunk.page,
        "section": chunk.section,
        "lines": lines,
        "text": chunk.text,
    })))
}
