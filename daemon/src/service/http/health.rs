//! `/ready` and `/metrics`: cheap however often they are asked (the daemon's knowledge
//! bases' row counts are read at most every 15 s, one read at a time, through handles
//! opened once: [`Every`], `from_app.rs`), and their details for key holders only when
//! there are keys: without one, `/ready` says only whether the server is ready and
//! `/metrics` is `401`.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{caller, Shared};

/// A value computed again when older than `period`, by one caller at a time: the others
/// wait for its result instead of computing it too.
pub(super) struct Every<T> {
    period: Duration,
    // A tokio Mutex: held across the computation, which awaits.
    last: tokio::sync::Mutex<Option<(Instant, T)>>,
}

impl<T: Clone> Every<T> {
    pub(super) fn new(period: Duration) -> Self {
        Self { period, last: tokio::sync::Mutex::new(None) }
    }

    /// The value, computed by `compute` when there is none younger than the period.
    pub(super) async fn get<F: Future<Output = T>>(&self, compute: impl FnOnce() -> F) -> T {
        let mut last = self.last.lock().await;
        if let Some((at, value)) = last.as_ref() {
            if at.elapsed() < self.period {
                return value.clone();
            }
        }
        let value = compute().await;
        *last = Some((Instant::now(), value.clone()));
        value
    }
}

/// Whether the caller may see details: anyone without keys, else a key holder.
fn may_see_details(server: &Shared, headers: &HeaderMap) -> bool {
    server.api.keys.is_empty() || caller(&server.api.keys, headers).is_ok()
}

/// Prometheus' text format; the gauges of state are read now. With keys, for key holders
/// only (Prometheus sends one with `authorization: {credentials: …}`).
pub(super) async fn metrics(State(server): State<Shared>, headers: HeaderMap) -> Response {
    if !may_see_details(&server, &headers) {
        return super::ApiError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", "missing or wrong API key")
            .into_response();
    }
    let line = server.api.bots.line();
    crate::metrics::gauge("lore_waiting_questions", line.waiting() as f64);
    crate::metrics::gauge("lore_answers_in_progress", line.answering() as f64);
    crate::metrics::gauge("lore_http_connections", server.connections.total() as f64);
    if let Some(local) = &server.api.generator.local {
        let (cells, in_use) = local.kv_cells();
        crate::metrics::gauge("lore_kv_cells", cells as f64);
        crate::metrics::gauge("lore_kv_cells_in_use", in_use as f64);
    }
    for (kb, rows) in server.api.health.rows().await {
        if let Ok(rows) = rows {
            crate::metrics::kb_rows(&kb, rows);
        }
    }
    let text = crate::metrics::handle().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Ready when the models are loaded (they are, once the server runs), every bot's
/// knowledge base holds rows, and every adapter is running. Which is not, the engines and
/// the errors are shown to key holders only.
pub(super) async fn ready(State(server): State<Shared>, headers: HeaderMap) -> Response {
    let health = &server.api.health;
    let rows = health.rows().await;
    let mut kbs = BTreeMap::new();
    let mut ok = true;
    for (name, kb) in health.knowledge_bases() {
        if kbs.contains_key(&kb) {
            continue;
        }
        let state = match rows.get(&kb) {
            Some(Ok(0)) => json!({"ok": false, "rows": 0, "error": "empty: run `lore ingest`", "bot": name}),
            Some(Ok(rows)) => json!({"ok": true, "rows": rows}),
            Some(Err(error)) => json!({"ok": false, "error": error, "bot": name}),
            None => json!({"ok": false, "error": "not opened", "bot": name}),
        };
        ok &= state["ok"] == true;
        kbs.insert(kb, state);
    }
    let adapters = server.api.adapters.all();
    ok &= adapters.values().all(|state| state == "running");
    let engines = health.engines();
    if let Some(engines) = &engines {
        ok &= engines.iter().any(|e| e.healthy);
    }
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    if !may_see_details(&server, &headers) {
        return (status, Json(json!({"ready": ok}))).into_response();
    }
    let body = json!({
        "ready": ok,
        "models": {"generator": true, "embedder": true},
        "engines": engines.map(|engines| engines.iter().map(|e| json!({"url": e.url, "healthy": e.healthy, "in_flight": e.in_flight})).collect::<Vec<_>>()),
        "knowledge_bases": kbs,
        "adapters": adapters,
    });
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn many_callers_at_once_share_one_computation_until_it_is_old() {
        let every = Arc::new(Every::new(Duration::from_secs(3600)));
        let computed = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..50)
            .map(|_| {
                let (every, computed) = (every.clone(), computed.clone());
                tokio::spawn(async move {
                    every
                        .get(|| async {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            computed.fetch_add(1, Ordering::SeqCst) + 1
                        })
                        .await
                })
            })
            .collect();
        for caller in callers {
            assert_eq!(caller.await.unwrap(), 1, "every caller got the one computation's value");
        }
        assert_eq!(computed.load(Ordering::SeqCst), 1);
        let fresh = Every::new(Duration::ZERO);
        assert_eq!(fresh.get(|| async { 1 }).await + fresh.get(|| async { 2 }).await, 3, "computed again when old");
    }
}
