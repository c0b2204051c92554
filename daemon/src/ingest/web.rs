//! Web pages as sources. `lore ingest --kb docs https://host/path/` fetches that page;
//! with `crawl`, also the pages below it on the same host: those its sitemap lists when
//! it lists any, else those found by following links. robots.txt is honoured (its rules
//! and its Crawl-delay), requests are spaced by `crawl_delay_ms`, at most `max_pages` are
//! fetched per start page, and a page fetched before is asked for with its ETag and
//! Last-Modified, so a re-ingest downloads only what changed. Only public addresses are
//! connected to unless the knowledge base allows private ones (`addresses.rs`), and
//! compressed answers are not inflated (bodies are capped at `max_file_bytes` as they
//! arrive).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lore_documents::{Block, Format};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use texting_robots::Robot;
use url::Url;

use super::addresses::Guard;
use super::files::{blocks_of, SkipReason, Skipped};
use super::sandbox::Sandbox;
use crate::config::parse_url;

/// How Lore names itself to web servers; robots.txt rules for `lore` apply to it.
pub const USER_AGENT: &str = concat!("lore/", env!("CARGO_PKG_VERSION"), " (knowledge-base ingest)");
const ROBOTS_AGENT: &str = "lore";

/// The longest Crawl-delay honoured: a site asking for more is still crawled, this slowly.
const MAX_ROBOTS_DELAY: Duration = Duration::from_secs(60);

/// Nested sitemaps read at most (a sitemap index may list thousands).
const MAX_SITEMAPS: usize = 20;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How a knowledge base's web sources are fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct WebSettings {
    /// Also the pages below each start page on its host.
    pub crawl: bool,
    /// Pages fetched at most per start page.
    pub max_pages: usize,
    /// Time between two requests to the host (robots.txt may ask for more).
    pub delay: Duration,
    /// Where validators and links of fetched pages are kept between runs; `None` fetches
    /// every page in full each time.
    pub cache: Option<PathBuf>,
    /// Which addresses may be connected to (`allow_private_addresses`).
    pub guard: Guard,
}

impl Default for WebSettings {
    fn default() -> Self {
        Self { crawl: false, max_pages: 500, delay: Duration::from_millis(500), cache: None, guard: Guard::default() }
    }
}

/// What a page was found to be this time.
pub enum Outcome {
    Changed(Vec<Block>),
    /// The server said it has not changed since the last run (304).
    Unchanged,
    /// The server said it is gone (404, 410): its chunks are removed.
    Gone,
    Skipped(Skipped),
}

pub struct Page {
    /// Its address, the chunks' source.
    pub url: String,
    pub outcome: Outcome,
}

/// What was learnt of a page last time: the validators for a conditional request, and its
/// links, so that an unchanged page (not downloaded again) still leads to its neighbours.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Remembered {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_modified: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    links: Vec<String>,
    /// A digest of its body: a page served under two addresses is stored once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
}

/// Every page fetched for one knowledge base, kept in a JSON file beside the daemon's other
/// state (`state_dir`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PageCache {
    #[serde(skip)]
    file: Option<PathBuf>,
    /// How the pages were cut into chunks: when that changes, every page is read again.
    #[serde(default)]
    chunking: String,
    pages: BTreeMap<String, Remembered>,
}

impl PageCache {
    /// The cache in `file`; empty when there is none yet, or it cannot be read (a warning:
    /// every page is then fetched in full, which loses nothing).
    /// `chunking` describes the chunking settings: pages remembered under others are not
    /// asked for conditionally (an unchanged page would keep its old chunks).
    pub fn load(file: Option<&Path>, chunking: String) -> Self {
        let Some(file) = file else { return Self { chunking, ..Self::default() } };
        let pages = match std::fs::read(file) {
            Ok(bytes) => serde_json::from_slice::<PageCache>(&bytes)
                .map_err(|e| tracing::warn!(file = %file.display(), error = %e, "ignoring an unreadable page cache"))
                .ok()
                .filter(|c| c.chunking == chunking)
                .map(|c| c.pages)
                .unwrap_or_default(),
            Err(_) => BTreeMap::new(),
        };
        Self { file: Some(file.to_path_buf()), chunking, pages }
    }

    /// Writes the cache, whole or not at all (a new file moved over the old one), owner-only:
    /// the addresses of a knowledge base's pages are its owner's business.
    pub fn save(&self) -> anyhow::Result<()> {
        let Some(file) = &self.file else { return Ok(()) };
        if let Some(dir) = file.parent() {
            crate::owner_only::tighten(dir);
        }
        crate::question::memory::write_atomically(file, &serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", file.display()))
    }
}

/// One start page and, when crawling, the pages below it, fetched one at a time.
pub struct Crawler<'a> {
    client: reqwest::Client,
    /// Pages in scope start with this: the start page's folder on its host.
    prefix: String,
    settings: &'a WebSettings,
    robots: Option<Robot>,
    delay: Duration,
    follow_links: bool,
    frontier: VecDeque<Url>,
    seen: HashSet<String>,
    fetched: usize,
    cut_short: bool,
    /// The first address each body digest was read at in this run.
    digests: BTreeMap<String, String>,
    last_request: Option<Instant>,
    max_bytes: u64,
    /// Where pages are parsed.
    sandbox: &'a Sandbox,
    /// Sources the knowledge base holds.
    stored: &'a dyn Fn(&str) -> bool,
}

impl<'a> Crawler<'a> {
    /// Reads the host's robots.txt and, when crawling, its sitemaps. Fails when the host
    /// cannot be reached, or its robots.txt cannot be read for a server error (RFC 9309:
    /// crawl nothing then).
    pub async fn start(
        root: &Url,
        settings: &'a WebSettings,
        max_bytes: u64,
        sandbox: &'a Sandbox,
        stored: &'a dyn Fn(&str) -> bool,
    ) -> anyhow::Result<Crawler<'a>> {
        settings.guard.check_url(root).map_err(anyhow::Error::msg)?;
        // Redirects are followed on the same origin; a start page may also move to https://
        // or www. (and, with `crawl`, to another host, whose robots.txt then applies). No
        // hop may lead to an address the guard refuses.
        let (start, crawl, guard) = (root.clone(), settings.crawl, settings.guard.clone());
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            let first = attempt.previous()[0].clone();
            let to = attempt.url();
            if attempt.previous().len() > 10 {
                return attempt.error("more than 10 redirects");
            }
            if let Err(why) = guard.check_url(to) {
                return attempt.error(why);
            }
            let start_moves = first == start && (crawl || same_site(&first, to));
            if start_moves || to.origin() == first.origin() {
                attempt.follow()
            } else {
                attempt.stop()
            }
        });
        let mut client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(redirects)
            .connect_timeout(REQUEST_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .no_gzip()
            .no_brotli()
            .no_deflate()
            .no_zstd();
        if let Some(resolver) = settings.guard.resolver() {
            client = client.dns_resolver(resolver);
        }
        let client = client.build().context("building the HTTP client")?;
        let prefix = folder_of(root);
        let mut crawler = Crawler {
            client,
            prefix,
            settings,
            robots: None,
            delay: settings.delay,
            follow_links: settings.crawl,
            frontier: VecDeque::from([root.clone()]),
            seen: HashSet::from([root.to_string()]),
            fetched: 0,
            cut_short: false,
            digests: BTreeMap::new(),
            last_request: None,
            max_bytes,
            sandbox,
            stored,
        };
        crawler.read_robots(root).await?;
        if settings.crawl {
            crawler.read_sitemaps(root).await;
        }
        Ok(crawler)
    }

    async fn read_robots(&mut self, root: &Url) -> anyhow::Result<()> {
        let url = root.join("/robots.txt").expect("an absolute path joins");
        let response = match self.get(&url, None).await {
            Ok(response) => response,
            Err(e) => bail!("cannot reach {}: {e}", root.origin().ascii_serialization()),
        };
        let status = response.status();
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            bail!("{url} answered {status}: crawling nothing until it can be read (RFC 9309)");
        }
        if !status.is_success() {
            return Ok(()); // no robots.txt: everything is allowed
        }
        let body = match self.body(response).await {
            Ok(body) => body,
            Err(e) => bail!("{}", e.at(url.as_str()).message),
        };
        match Robot::new(ROBOTS_AGENT, &body) {
            Ok(robot) => {
                if let Some(seconds) = robot.delay.filter(|s| s.is_finite() && *s > 0.0) {
                    let asked = Duration::from_secs_f32(seconds.min(MAX_ROBOTS_DELAY.as_secs_f32()));
                    self.delay = self.delay.max(asked);
                }
                self.robots = Some(robot);
            }
            Err(e) => tracing::warn!(%url, error = %e, "robots.txt could not be parsed; crawling as if it were empty"),
        }
        Ok(())
    }

    /// Queues the in-scope pages of the host's sitemaps (those robots.txt names, and
    /// /sitemap.xml). When they list any, links are not followed: the site said which
    /// pages it has.
    async fn read_sitemaps(&mut self, root: &Url) {
        let mut sitemaps: VecDeque<String> = self.robots.iter().flat_map(|r| r.sitemaps.clone()).collect();
        sitemaps.push_back(root.join("/sitemap.xml").expect("an absolute path joins").to_string());
        let mut read = HashSet::new();
        let mut listed = 0;
        while let Some(address) = sitemaps.pop_front() {
            if read.len() == MAX_SITEMAPS || !read.insert(address.clone()) {
                continue;
            }
            let Ok(url) = Url::parse(&address) else { continue };
            if url.host() != root.host() {
                // Its pages would be out of scope, and it could point anywhere.
                tracing::info!(sitemap = %url, start = %root, "ignoring a sitemap on another host");
                continue;
            }
            let xml = match self.get_text(&url).await {
                Ok(Some(xml)) => xml,
                Ok(None) => continue,
                Err(why) => {
                    // The pages it lists may not be reached: nothing is taken for gone.
                    tracing::warn!(%url, why, "cannot read the sitemap; the crawl counts as incomplete");
                    self.cut_short = true;
                    continue;
                }
            };
            // Off the async workers, as every document is read.
            let Ok(sitemap) = tokio::task::spawn_blocking(move || lore_documents::sitemap(&xml)).await else {
                tracing::warn!(%url, "cannot read the sitemap; the crawl counts as incomplete");
                self.cut_short = true;
                continue;
            };
            sitemaps.extend(sitemap.sitemaps);
            for page in sitemap.pages {
                if let Ok(page) = parse_url(&page) {
                    listed += usize::from(self.enqueue(page));
                }
            }
        }
        if listed > 0 {
            tracing::info!(start = %root, pages = listed, "crawling the pages the sitemap lists");
            self.follow_links = false;
        }
    }

    /// A small text resource (a sitemap): `None` when the server says it is not there,
    /// an error when it could not be read.
    async fn get_text(&mut self, url: &Url) -> Result<Option<String>, String> {
        let response = self.get(url, None).await?;
        let status = response.status();
        if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(format!("the server answered {status}"));
        }
        let body = self.body(response).await.map_err(|e| e.at(url.as_str()).message)?;
        String::from_utf8(body).map(Some).map_err(|_| "not UTF-8".to_string())
    }

    /// Queues `url` if it is new, in scope, allowed, and the page limit leaves room.
    fn enqueue(&mut self, url: Url) -> bool {
        let address = url.to_string();
        if !address.starts_with(&self.prefix) || self.seen.contains(&address) {
            return false;
        }
        if self.robots.as_ref().is_some_and(|r| !r.allowed(&address)) {
            return false;
        }
        if self.seen.len() >= self.settings.max_pages {
            self.cut_short = true;
            return false;
        }
        self.seen.insert(address);
        self.frontier.push_back(url);
        true
    }

    /// Pages fetched so far plus those waiting: the progress bar's length.
    pub fn known(&self) -> usize {
        self.fetched + self.frontier.len()
    }

    /// Whether every page in scope was reached: then stored pages that were not are gone.
    pub fn complete(&self) -> bool {
        self.settings.crawl && self.frontier.is_empty() && !self.cut_short
    }

    /// Whether a stored source lies below the start page (crawled, so [`Self::complete`]
    /// speaks for it).
    pub fn in_scope(&self, source: &str) -> bool {
        source.starts_with(&self.prefix)
    }

    /// The next page, or `None` when there are no more.
    pub async fn next(&mut self, cache: &mut PageCache) -> Option<Page> {
        let url = self.frontier.pop_front()?;
        self.fetched += 1;
        let address = url.to_string();
        if self.robots.as_ref().is_some_and(|r| !r.allowed(&address)) {
            let why = "robots.txt asks crawlers to leave it alone";
            return Some(self.skipped(&address, SkipReason::Disallowed, why));
        }
        let remembered = cache.pages.get(&address).cloned();
        let (mut outcome, mut learnt) = self.fetch(&url, remembered.as_ref()).await;
        let first_at = |learnt: &Option<Remembered>, digests: &BTreeMap<String, String>| {
            learnt.as_ref().and_then(|l| digests.get(l.digest.as_ref()?)).filter(|first| **first != address).cloned()
        };
        // Unchanged, but not stored (an earlier run stopped before writing it, or it was
        // the copy of a page now gone): read it whole after all.
        if matches!(outcome, Outcome::Unchanged)
            && !(self.stored)(&address)
            && first_at(&learnt, &self.digests).is_none()
        {
            (outcome, learnt) = self.fetch(&url, None).await;
        }
        // A page that failed may have led to others: nothing unreached is taken for gone.
        if let Outcome::Skipped(skipped) = &outcome {
            if !matches!(skipped.reason, SkipReason::Duplicate | SkipReason::WrongType) {
                self.cut_short = true;
            }
        }
        if let Some(first) = first_at(&learnt, &self.digests) {
            let why = format!("the same page as {first}");
            outcome = Outcome::Skipped(Skipped::new(Path::new(&address), SkipReason::Duplicate, why));
        } else if let Some(digest) = learnt.as_ref().and_then(|l| l.digest.clone()) {
            self.digests.insert(digest, address.clone());
        }
        if let Some(learnt) = learnt {
            if self.follow_links {
                for link in &learnt.links {
                    if let Ok(link) = parse_url(link) {
                        self.enqueue(link);
                    }
                }
            }
            cache.pages.insert(address.clone(), learnt);
        } else if matches!(outcome, Outcome::Gone) {
            cache.pages.remove(&address);
        }
        Some(Page { url: address, outcome })
    }

    fn skipped(&self, address: &str, reason: SkipReason, why: impl std::fmt::Display) -> Page {
        Page { url: address.to_string(), outcome: Outcome::Skipped(Skipped::new(Path::new(address), reason, why)) }
    }

    /// One page, and what to remember of it (its validators and links) when it was read.
    async fn fetch(&mut self, url: &Url, remembered: Option<&Remembered>) -> (Outcome, Option<Remembered>) {
        let address = url.as_str();
        let skip = |reason, why: String| Outcome::Skipped(Skipped::new(Path::new(address), reason, why));
        let response = match self.get(url, remembered).await {
            Ok(response) => response,
            Err(e) => return (skip(SkipReason::Unreachable, format!("cannot fetch it: {e}")), None),
        };
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED {
            return (Outcome::Unchanged, remembered.cloned());
        }
        if matches!(status, StatusCode::NOT_FOUND | StatusCode::GONE) {
            return (Outcome::Gone, None);
        }
        if status.is_redirection() {
            let to = response.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("?");
            let why = if self.fetched == 1 {
                format!("redirected to {to}, on another host; only `crawl` follows a start page to another host")
            } else {
                format!("redirected to {to}, on another host; not followed")
            };
            return (skip(SkipReason::LinkOutside, why), None);
        }
        if !status.is_success() {
            return (skip(SkipReason::Unreachable, format!("the server answered {status}")), None);
        }
        let landed = response.url().clone();
        if self.fetched == 1 && landed.as_str() != address {
            // The start page moved (http to https, a `www.`, a missing slash): its new
            // folder is the scope, and the new host's robots.txt applies.
            if landed.origin() != url.origin() {
                if let Err(e) = self.read_robots(&landed).await {
                    return (skip(SkipReason::Unreachable, format!("{e:#}")), None);
                }
                if self.robots.as_ref().is_some_and(|r| !r.allowed(landed.as_str())) {
                    let why = format!("moved to {landed}, which robots.txt asks crawlers to leave alone");
                    return (skip(SkipReason::Disallowed, why), None);
                }
            }
            self.prefix = folder_of(&landed);
            self.seen.insert(landed.to_string());
        }
        if landed.as_str() != address && !landed.as_str().starts_with(&self.prefix) {
            let why = format!("redirected to {landed}, outside {}; not followed", self.prefix);
            return (skip(SkipReason::LinkOutside, why), None);
        }
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (etag, last_modified) = (header(ETAG), header(LAST_MODIFIED));
        let content_type = header(CONTENT_TYPE).unwrap_or_default();
        let Some(format) = format_of(&content_type, &landed) else {
            let why = format!("served as {content_type:?}, not a supported type");
            return (skip(SkipReason::WrongType, why), None);
        };
        let bytes = match self.body(response).await {
            Ok(bytes) => bytes,
            Err(skipped) => return (Outcome::Skipped(skipped.at(address)), None),
        };
        let digest = Some(hex_digest(&bytes));
        // Links are read with the page, in the sandbox; kept even when a sitemap is
        // followed: a later run may have to follow links.
        let (outcome, links) =
            match blocks_of(self.sandbox, Path::new(address), format, bytes, format == Format::Html).await {
                Ok(parsed) => {
                    let links = parsed.links.map(|(links, base)| resolve_links(&links, base.as_deref(), &landed));
                    (Outcome::Changed(parsed.blocks), links.unwrap_or_default())
                }
                Err(skipped) => (Outcome::Skipped(skipped), Vec::new()),
            };
        (outcome, Some(Remembered { etag, last_modified, links, digest }))
    }

    /// A GET, `delay` after the previous request, conditional when the page was seen before.
    /// The error says why, causes included (a refused address is one).
    async fn get(&mut self, url: &Url, remembered: Option<&Remembered>) -> Result<reqwest::Response, String> {
        self.settings.guard.check_url(url)?;
        if let Some(last) = self.last_request {
            tokio::time::sleep_until((last + self.delay).into()).await;
        }
        self.last_request = Some(Instant::now());
        let mut request = self.client.get(url.clone());
        if let Some(r) = remembered {
            if let Some(etag) = &r.etag {
                request = request.header(IF_NONE_MATCH, etag);
            }
            if let Some(date) = &r.last_modified {
                request = request.header(IF_MODIFIED_SINCE, date);
            }
        }
        request.send().await.map_err(|e| format!("{:#}", anyhow::Error::new(e)))
    }

    /// The body, unless it is over `max_bytes` (announced or as it arrives).
    async fn body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, BodyError> {
        let too_large = |size: u64| BodyError::TooLarge(size, self.max_bytes);
        let announced = response.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if let Some(size) = announced.filter(|&s| s > self.max_bytes) {
            return Err(too_large(size));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| BodyError::Broken(e.to_string()))? {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > self.max_bytes {
                return Err(too_large(body.len() as u64));
            }
        }
        Ok(body)
    }
}

enum BodyError {
    TooLarge(u64, u64),
    Broken(String),
}

impl BodyError {
    fn at(self, address: &str) -> Skipped {
        let path = Path::new(address);
        match self {
            BodyError::TooLarge(size, max) => {
                let why = format!(
                    "{} is over max_file_bytes ({})",
                    super::files::human_bytes(size),
                    super::files::human_bytes(max)
                );
                Skipped::new(path, SkipReason::TooLarge, why)
            }
            BodyError::Broken(e) => Skipped::new(path, SkipReason::Unreachable, format!("the download broke off: {e}")),
        }
    }
}

/// Whether `to` is `from`'s host, give or take a `www.`.
fn same_site(from: &Url, to: &Url) -> bool {
    let host = |u: &Url| u.host_str().map(|h| h.strip_prefix("www.").unwrap_or(h).to_ascii_lowercase());
    host(from).is_some() && host(from) == host(to)
}

/// The folder an address is in, with its origin: pages below it are in scope.
fn folder_of(url: &Url) -> String {
    let path = url.path();
    format!("{}{}", url.origin().ascii_serialization(), &path[..path.rfind('/').map_or(0, |i| i + 1)])
}

fn hex_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The format a server says a page is in, else the one its address's extension names.
fn format_of(content_type: &str, url: &Url) -> Option<Format> {
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let by_type = match mime.as_str() {
        "text/html" | "application/xhtml+xml" => Some(Format::Html),
        "text/plain" => Some(Format::Text),
        "text/markdown" | "text/x-markdown" => Some(Format::Markdown),
        "application/pdf" => Some(Format::Pdf),
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => Some(Format::Docx),
        "application/vnd.oasis.opendocument.text" => Some(Format::Odt),
        _ => None,
    };
    let generic = mime.is_empty() || mime == "application/octet-stream";
    by_type.or_else(|| generic.then(|| Format::of_path(Path::new(url.path()))).flatten())
}

/// A page's links (as written, and its `<base href>`) as absolute addresses without
/// fragments.
fn resolve_links(links: &[String], base: Option<&str>, page: &Url) -> Vec<String> {
    let base = base.and_then(|b| page.join(b).ok()).unwrap_or_else(|| page.clone());
    let mut seen = HashSet::new();
    links
        .iter()
        .filter_map(|href| base.join(href).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .map(|mut u| {
            u.set_fragment(None);
            u.to_string()
        })
        .filter(|u| seen.insert(u.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_comes_from_the_content_type_else_the_extension() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(format_of("text/html; charset=utf-8", &url("https://h/a")), Some(Format::Html));
        assert_eq!(format_of("application/pdf", &url("https://h/a.html")), Some(Format::Pdf));
        assert_eq!(format_of("", &url("https://h/guide.md")), Some(Format::Markdown));
        assert_eq!(format_of("application/octet-stream", &url("https://h/h.docx")), Some(Format::Docx));
        assert_eq!(format_of("image/png", &url("https://h/a.md")), None);
    }

    #[test]
    fn links_resolve_against_the_page_or_its_base_without_fragments() {
        let resolve_links = |html: &str, page: &Url| {
            let (links, base) = lore_documents::links(html);
            resolve_links(&links, base.as_deref(), page)
        };
        let page = Url::parse("https://h/docs/index.html").unwrap();
        let html = r#"<a href="leave.html#sick">a</a><a href="leave.html">b</a><a href="mailto:x@h">c</a>
            <a href="/top">d</a><a href="https://other/x">e</a>"#;
        assert_eq!(resolve_links(html, &page), ["https://h/docs/leave.html", "https://h/top", "https://other/x"]);
        let based = r#"<base href="/v2/"><a href="a.html">a</a>"#;
        assert_eq!(resolve_links(based, &page), ["https://h/v2/a.html"]);
    }

    #[test]
    fn only_http_addresses_are_web_sources() {
        assert!(parse_url("https://h/docs/").is_ok());
        assert_eq!(parse_url("https://h/a#x").unwrap().as_str(), "https://h/a");
        assert!(parse_url("ftp://h/x").unwrap_err().contains("not an http:// or https:// address"));
        assert!(parse_url("https//h").unwrap_err().contains("not a web address"));
    }
}
