//! `/ready` and `/metrics`: cheap however often they are asked (the knowledge bases'
//! row counts are read at most every [`KB_ROWS_EVERY`], one read at a time, through
//! handles opened once), and their details for key holders only when there are keys:
//! without one, `/ready` says only whether the server is ready and `/metrics` is `401`.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lore_plugins::KbHandle;
use serde_json::json;

use super::{caller, Shared};
use crate::app::App;

/// How old the row counts `/ready` and `/metrics` report may be.
pub(super) const KB_ROWS_EVERY: Duration = Duration::from_secs(15);
/// How long reading the row counts may take (an object store that does not answer).
const KB_ROWS_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Rows in a knowledge base, or why they could not be counted.
type Rows = Result<usize, String>;

/// The bots' knowledge bases, each opened once, and their latest row counts.
pub(super) struct KbRows {
    handles: BTreeMap<String, Result<KbHandle, String>>,
    latest: Every<BTreeMap<String, Rows>>,
}

impl KbRows {
    /// The bots' knowledge bases, their rows read again when older than `every`.
    pub(super) fn new(app: &App, every: Duration) -> Self {
        let handles = app
            .config
            .bots
            .values()
            .map(|bot| (bot.knowledge_base.clone(), app.kb(&bot.knowledge_base).map_err(|e| format!("{e:#}"))))
            .collect();
        Self { handles, latest: Every::new(every) }
    }

    /// Each knowledge base's rows, read at most once a period.
    async fn read(&self) -> BTreeMap<String, Rows> {
        self.latest
            .get(|| async {
                let mut rows = BTreeMap::new();
                for (name, handle) in &self.handles {
                    let counted = match handle {
                        Ok(handle) => match tokio::time::timeout(KB_ROWS_TIMEOUT, handle.count()).await {
                            Ok(counted) => counted.map_err(|e| format!("{e:#}")),
                            Err(_) => Err(format!("counting its rows took over {} s", KB_ROWS_TIMEOUT.as_secs())),
                        },
                        Err(why) => Err(why.clone()),
                    };
                    rows.insert(name.clone(), counted);
                }
                rows
            })
            .await
    }
}

/// Whether the caller may see details: anyone without keys, else a key holder.
fn may_see_details(server: &Shared, headers: &HeaderMap) -> bool {
    server.keys.is_empty() || caller(&server.keys, headers).is_ok()
}

/// Prometheus' text format; the gauges of state are read now. With keys, for key holders
/// only (Prometheus sends one with `authorization: {credentials: …}`).
pub(super) async fn metrics(State(server): State<Shared>, headers: HeaderMap) -> Response {
    if !may_see_details(&server, &headers) {
        return super::ApiError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", "missing or wrong API key")
            .into_response();
    }
    let line = server.router.line();
    crate::metrics::gauge("lore_waiting_questions", line.waiting() as f64);
    crate::metrics::gauge("lore_answers_in_progress", line.answering() as f64);
    crate::metrics::gauge("lore_http_connections", server.connections.total() as f64);
    if let Some(generator) = &server.app.generator {
        crate::metrics::gauge("lore_kv_cells", generator.kv_cells() as f64);
        crate::metrics::gauge("lore_kv_cells_in_use", generator.kv_cells_in_use() as f64);
    }
    for (kb, rows) in server.kb_rows.read().await {
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
    let rows = server.kb_rows.read().await;
    let mut kbs = BTreeMap::new();
    let mut ok = true;
    for (name, bot) in &server.app.config.bots {
        let kb = &bot.knowledge_base;
        if kbs.contains_key(kb) {
            continue;
        }
        let state = match rows.get(kb) {
            Some(Ok(0)) => json!({"ok": false, "rows": 0, "error": "empty: run `lore ingest`", "bot": name}),
            Some(Ok(rows)) => json!({"ok": true, "rows": rows}),
            Some(Err(error)) => json!({"ok": false, "error": error, "bot": name}),
            None => json!({"ok": false, "error": "not opened", "bot": name}),
        };
        ok &= state["ok"] == true;
        kbs.insert(kb.clone(), state);
    }
    let adapters = server.adapters.all();
    ok &= adapters.values().all(|state| state == "running");
    if let Some(pool) = &server.app.remote {
        ok &= pool.endpoints().iter().any(|e| e.healthy);
    }
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    if !may_see_details(&server, &headers) {
        return (status, Json(json!({"ready": ok}))).into_response();
    }
    let body = json!({
        "ready": ok,
        "models": {"generator": true, "embedder": true},
        "engines": server.app.remote.as_ref().map(|pool| pool.endpoints().iter().map(|e| json!({"url": e.url, "healthy": e.healthy, "in_flight": e.in_flight})).collect::<Vec<_>>()),
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
