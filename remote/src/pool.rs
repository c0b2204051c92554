//! A pool of OpenAI-compatible servers: each request takes a place on the healthy server
//! with the fewest requests in flight (at most `max_in_flight` each); a server that fails
//! is taken out and put back when a health check (`GET {endpoint}/models`) succeeds.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use lore_core::Secret;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::{RemoteError, ServerFailure};

/// How to reach a pool of servers.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Base URLs as OpenAI clients take them, ending in `/v1` (e.g. `http://gpu1:8000/v1`).
    pub endpoints: Vec<String>,
    /// Sent as a bearer token; `Debug` shows it redacted.
    pub api_key: Option<Secret>,
    /// Requests one endpoint serves at once; more wait for a free place.
    pub max_in_flight: usize,
    /// How often an endpoint taken out is checked.
    pub health_interval: Duration,
    /// Longest wait for a response to start, and between two pieces of a stream.
    pub timeout: Duration,
    /// Longest a whole request may take, failovers and a streamed answer included: past it
    /// the request fails and its place on the endpoint is given back.
    pub request_deadline: Duration,
}

/// One server of the pool.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) url: String,
    in_flight: AtomicUsize,
    healthy: AtomicBool,
}

impl Endpoint {
    /// The server's root, where non-OpenAI routes such as `/tokenize` live.
    pub(crate) fn root(&self) -> &str {
        self.url.strip_suffix("/v1").unwrap_or(&self.url)
    }
}

/// An endpoint's state, for readiness reports and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointState {
    pub url: String,
    pub healthy: bool,
    pub in_flight: usize,
}

pub(crate) struct Pool {
    pub(crate) settings: PoolSettings,
    client: reqwest::Client,
    endpoints: Vec<Endpoint>,
    /// Signalled when a place frees up or an endpoint comes back.
    freed: Notify,
    /// Stops the health checks when the last handle goes.
    stop: CancellationToken,
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A request's place on one endpoint; given back when dropped.
pub(crate) struct Place<'a> {
    pool: &'a Pool,
    pub(crate) index: usize,
}

impl Place<'_> {
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.pool.endpoints[self.index]
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.endpoint().in_flight.fetch_sub(1, Ordering::SeqCst);
        self.pool.freed.notify_waiters();
    }
}

/// Where a JSON request goes on each server.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Route<'a> {
    /// Under the OpenAI base URL (`{endpoint}/embeddings`).
    Api(&'a str),
    /// At the server's root (`/tokenize`: vLLM, llama.cpp's server, TGI, Lore).
    Root(&'a str),
}

impl Pool {
    /// Starts using `settings.endpoints` (all assumed healthy until one fails) and checks
    /// those taken out every `health_interval`. Needs a tokio runtime.
    pub(crate) fn start(settings: PoolSettings) -> Result<Arc<Self>, RemoteError> {
        if settings.endpoints.is_empty() {
            return Err(RemoteError::NoEndpoints);
        }
        // No transparent decompression (another crate of the workspace turns reqwest's gzip
        // on): a small compressed answer must not inflate past the caps below.
        let client = reqwest::Client::builder()
            .connect_timeout(settings.timeout)
            .read_timeout(settings.timeout)
            .no_gzip()
            .no_brotli()
            .no_deflate()
            .no_zstd()
            .build()
            .map_err(RemoteError::Client)?;
        let endpoints = settings
            .endpoints
            .iter()
            .map(|url| Endpoint {
                url: url.trim_end_matches('/').to_string(),
                in_flight: AtomicUsize::new(0),
                healthy: AtomicBool::new(true),
            })
            .collect();
        let pool = Arc::new(Self { settings, client, endpoints, freed: Notify::new(), stop: CancellationToken::new() });
        tokio::spawn(check_health(Arc::downgrade(&pool), pool.stop.clone()));
        Ok(pool)
    }

    pub(crate) fn states(&self) -> Vec<EndpointState> {
        self.endpoints
            .iter()
            .map(|e| EndpointState {
                url: e.url.clone(),
                healthy: e.healthy.load(Ordering::SeqCst),
                in_flight: e.in_flight.load(Ordering::SeqCst),
            })
            .collect()
    }

    /// Asks every endpoint for its models (`GET {endpoint}/models`), as `lore check` does:
    /// `Err` says why one does not answer.
    pub(crate) async fn check_all(&self) -> Vec<(String, Result<(), RemoteError>)> {
        let checks = self.endpoints.iter().map(|endpoint| async move {
            let answer = self.request(reqwest::Method::GET, format!("{}/models", endpoint.url)).send().await;
            let result = match answer {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => Err(refusal(response).await),
                Err(e) => Err(RemoteError::Request(e)),
            };
            (endpoint.url.clone(), result)
        });
        futures::future::join_all(checks).await
    }

    /// Requests all endpoints together may serve at once.
    pub(crate) fn capacity(&self) -> usize {
        self.endpoints.len() * self.settings.max_in_flight
    }

    /// A place on the healthy endpoint (not yet failed for this request) with the fewest
    /// requests in flight, waiting while all are full. `None` when none is left to try.
    pub(crate) async fn take_place(&self, failed_on: &[usize], cancel: &CancellationToken) -> Option<Place<'_>> {
        loop {
            let freed = self.freed.notified();
            let mut candidates: Vec<(usize, &Endpoint)> = self
                .endpoints
                .iter()
                .enumerate()
                .filter(|(i, e)| !failed_on.contains(i) && e.healthy.load(Ordering::SeqCst))
                .collect();
            if candidates.is_empty() {
                return None;
            }
            candidates.sort_by_key(|(_, e)| e.in_flight.load(Ordering::SeqCst));
            // Taken with one atomic step: requests choosing at the same moment cannot both
            // take an endpoint's last place.
            let max = self.settings.max_in_flight;
            let taken = candidates.iter().find(|(_, e)| {
                e.in_flight.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1)).is_ok()
            });
            if let Some((index, _)) = taken {
                return Some(Place { pool: self, index: *index });
            }
            tokio::select! {
                () = freed => {}
                () = cancel.cancelled() => return None,
            }
        }
    }

    pub(crate) fn take_out(&self, index: usize, error: &RemoteError) {
        let endpoint = &self.endpoints[index];
        if endpoint.healthy.swap(false, Ordering::SeqCst) {
            tracing::warn!(endpoint = %endpoint.url, %error, "engine endpoint failed; taking it out until it answers a health check");
        }
    }

    pub(crate) fn request(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let request = self.client.request(method, url);
        match &self.settings.api_key {
            Some(key) => request.bearer_auth(key.expose()),
            None => request,
        }
    }

    /// Posts `body` and returns the JSON answer, failing over to the next endpoint when
    /// one cannot be reached or fails (5xx, an answer over [`MAX_ANSWER_BYTES`]); a 4xx
    /// answer is returned as it is. Gives up after `request_deadline`.
    pub(crate) async fn post_json(&self, route: Route<'_>, body: &Value) -> Result<Value, RemoteError> {
        let deadline = self.settings.request_deadline;
        tokio::time::timeout(deadline, self.post_json_anywhere(route, body))
            .await
            .unwrap_or(Err(RemoteError::Deadline(deadline)))
    }

    async fn post_json_anywhere(&self, route: Route<'_>, body: &Value) -> Result<Value, RemoteError> {
        let mut failed_on = Vec::new();
        let mut tried = Vec::new();
        let never = CancellationToken::new();
        while let Some(place) = self.take_place(&failed_on, &never).await {
            let endpoint = place.endpoint();
            let url = match route {
                Route::Api(path) => format!("{}/{path}", endpoint.url),
                Route::Root(path) => format!("{}/{path}", endpoint.root()),
            };
            let error = match self.request(reqwest::Method::POST, url.clone()).json(body).send().await {
                Ok(response) if response.status().is_success() => match read_body(response, MAX_ANSWER_BYTES).await {
                    Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                        Ok(value) => return Ok(value),
                        Err(e) => RemoteError::Malformed(format!("unreadable answer: {e}")),
                    },
                    Err(e) => e,
                },
                Ok(response) if response.status().is_client_error() => return Err(refusal(response).await),
                Ok(response) => refusal(response).await,
                Err(e) => RemoteError::Request(e),
            };
            self.take_out(place.index, &error);
            failed_on.push(place.index);
            tried.push(ServerFailure { url, error });
        }
        Err(RemoteError::Unreachable { tried })
    }
}

/// The largest answer read whole (a batch of embeddings, a prompt's log-probabilities, token
/// ids): a server that sends more is failing, and its answer is not kept.
pub(crate) const MAX_ANSWER_BYTES: usize = 32 << 20;

/// Of an error answer only the start is read: it is shown cut to a line anyway.
const MAX_ERROR_BYTES: usize = 16 << 10;

/// A response's body, streamed and refused as soon as it is over `cap` bytes (announced or
/// as it arrives), so a server cannot make Lore hold an answer of any size.
pub(crate) async fn read_body(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, RemoteError> {
    let too_large = || RemoteError::AnswerTooLarge { limit_bytes: cap };
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(RemoteError::BrokeOff)? {
        if body.len() + chunk.len() > cap {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error answer: its status and the start of its body, cut to a short line.
pub(crate) async fn refusal(mut response: reqwest::Response) -> RemoteError {
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BYTES {
            break;
        }
    }
    RemoteError::Refused { status, body: String::from_utf8_lossy(&body).chars().take(300).collect() }
}

/// `n` bytes as a person reads them (`1 MiB`, `32 MiB`, `16 KiB`).
pub(crate) fn human_size(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// Puts endpoints that were taken out back once `GET {endpoint}/models` answers.
async fn check_health(pool: Weak<Pool>, stop: CancellationToken) {
    loop {
        let Some(pool) = pool.upgrade() else { return };
        let interval = pool.settings.health_interval;
        for endpoint in pool.endpoints.iter().filter(|e| !e.healthy.load(Ordering::SeqCst)) {
            let probe = pool.request(reqwest::Method::GET, format!("{}/models", endpoint.url)).send().await;
            if probe.is_ok_and(|r| r.status().is_success()) {
                endpoint.healthy.store(true, Ordering::SeqCst);
                pool.freed.notify_waiters();
                tracing::info!(endpoint = %endpoint.url, "engine endpoint is back");
            }
        }
        drop(pool);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::fake::{self, http, Fake, Reply};

    async fn post(pool: &Pool) -> Result<Value, RemoteError> {
        pool.post_json(Route::Api("embeddings"), &json!({"input": ["bees"]})).await
    }

    #[tokio::test]
    async fn a_refused_request_is_returned_as_it_is_and_its_server_stays_in() {
        let refusing = Fake::start(http("400 Bad Request", "input too long")).await;
        let other = Fake::start(http("200 OK", "{}")).await;
        let pool = Pool::start(fake::settings(vec![refusing.url.clone(), other.url.clone()])).unwrap();
        let error = post(&pool).await.unwrap_err();
        assert!(matches!(&error, RemoteError::Refused { status: 400, body } if body == "input too long"), "{error}");
        assert!(error.is_callers_fault());
        assert_eq!(other.requests(), 0, "no other server is asked");
        assert!(pool.states()[0].healthy);
    }

    #[tokio::test]
    async fn each_failing_server_is_named_with_its_reason_and_taken_out() {
        let failing = Fake::start(http("500 Internal Server Error", "out of memory")).await;
        let garbled = Fake::start(http("200 OK", "not json")).await;
        let huge = Fake::start(Reply::Raw("HTTP/1.1 200 OK\r\nContent-Length: 40000000\r\n\r\n".into())).await;
        let cut = Fake::start(Reply::Raw("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"data\":".into())).await;
        let closed = fake::closed();
        let endpoints = vec![failing.url.clone(), garbled.url.clone(), huge.url.clone(), cut.url.clone(), closed];
        let pool = Pool::start(fake::settings(endpoints.clone())).unwrap();

        let error = post(&pool).await.unwrap_err();
        let RemoteError::Unreachable { tried } = &error else { panic!("{error}") };
        let urls: Vec<&str> = tried.iter().map(|f| f.url.strip_suffix("/embeddings").unwrap()).collect();
        assert_eq!(urls, endpoints, "each server, in the order tried");
        let reasons: Vec<&RemoteError> = tried.iter().map(|f| &f.error).collect();
        assert!(matches!(reasons[0], RemoteError::Refused { status: 500, body } if body == "out of memory"), "{error}");
        assert!(matches!(reasons[1], RemoteError::Malformed(why) if why.starts_with("unreadable answer")), "{error}");
        assert!(matches!(reasons[2], RemoteError::AnswerTooLarge { limit_bytes: MAX_ANSWER_BYTES }), "{error}");
        assert!(matches!(reasons[3], RemoteError::BrokeOff(_)), "{error}");
        assert!(matches!(reasons[4], RemoteError::Request(_)), "{error}");
        assert!(error.to_string().contains("HTTP 500: out of memory; "), "{error}");
        assert!(pool.states().iter().all(|s| !s.healthy && s.in_flight == 0), "{:?}", pool.states());

        let error = post(&pool).await.unwrap_err();
        assert!(matches!(&error, RemoteError::Unreachable { tried } if tried.is_empty()), "{error}");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_meets_the_deadline() {
        let silent = Fake::start(Reply::Silence).await;
        let settings =
            PoolSettings { request_deadline: Duration::from_millis(300), ..fake::settings(vec![silent.url]) };
        let pool = Pool::start(settings).unwrap();
        let error = post(&pool).await.unwrap_err();
        assert!(matches!(error, RemoteError::Deadline(d) if d == Duration::from_millis(300)), "{error}");
        assert_eq!((pool.states()[0].healthy, pool.states()[0].in_flight), (true, 0), "its place is free");
    }

    #[tokio::test]
    async fn a_pool_needs_a_server_and_a_check_says_why_each_does_not_answer() {
        assert!(matches!(Pool::start(fake::settings(vec![])).err(), Some(RemoteError::NoEndpoints)));
        let loading = Fake::start(http("503 Service Unavailable", "loading the model")).await;
        let pool = Pool::start(fake::settings(vec![loading.url.clone(), fake::closed()])).unwrap();
        let checks = pool.check_all().await;
        assert!(matches!(&checks[0].1, Err(RemoteError::Refused { status: 503, .. })), "{checks:?}");
        assert!(matches!(&checks[1].1, Err(RemoteError::Request(_))), "{checks:?}");
    }
}
