//! Web pages as sources, from a small site served on 127.0.0.1 (robots.txt, a sitemap or
//! links, ETags): crawled politely within its folder, fetched again only when changed,
//! and cited by address and section.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use lore::app::{App, Load};
use lore::config::parse_url;
use lore::ingest::{ingest_web, Progress::Quiet, Settings, SkipReason};
use lore_tests::models::config;

const INDEX: &str = r#"<html><body><nav><a href="/">Home</a> <a href="/about.html">About</a></nav>
<main><h1>Staff docs</h1><p>Start here to find the staff documentation.</p><ul>
<li><a href="leave.html">Leave</a></li><li><a href="benefits.html#top">Benefits</a></li>
<li><a href="private/salaries.html">Salaries</a></li><li><a href="broken.html">Broken</a></li>
<li><a href="logo.png">Logo</a></li><li><a href="notes.txt">Notes</a></li>
<li><a href="https://example.invalid/elsewhere">Elsewhere</a></li></ul></main></body></html>"#;

const LEAVE: &str = r#"<html><body><main><h1>Leave</h1>
<h2>Sick days</h2><p>If you are ill, call your manager before nine in the morning on the first day.</p>
<h2>Vacation</h2><p>Up to five unused vacation days carry over into the next year.</p>
<p><a href="index.html">Back</a></p></main></body></html>"#;

const BENEFITS: &str = r#"<html><body><main><h1>Benefits</h1>
<p>The bicycle allowance is forty euros a month.</p><a href="leave.html">Leave</a></main></body></html>"#;

/// A path's content type, body and status.
type Resource = (&'static str, Vec<u8>, StatusCode);

/// A tiny web server: its resources by path, and a log of requests.
struct Site {
    pages: Mutex<BTreeMap<String, Resource>>,
    log: Mutex<Vec<Request>>,
}

#[derive(Debug, Clone)]
struct Request {
    path: String,
    status: StatusCode,
    at: Instant,
}

impl Site {
    fn staff_docs() -> Arc<Self> {
        let site = Arc::new(Site { pages: Mutex::default(), log: Mutex::default() });
        let html = "text/html; charset=utf-8";
        site.put("/robots.txt", "text/plain", "User-agent: *\nDisallow: /docs/private/\n");
        site.put("/docs/", html, INDEX);
        site.put("/docs/index.html", html, INDEX);
        site.put("/docs/leave.html", html, LEAVE);
        site.put("/docs/benefits.html", html, BENEFITS);
        site.put("/docs/private/salaries.html", html, "<p>Secret.</p>");
        site.put("/docs/notes.txt", "text/plain", "The office closes at six on Fridays.\n");
        site.put("/docs/logo.png", "image/png", "\u{89}PNG not really");
        site.put("/about.html", html, "<p>About us.</p>");
        site.pages
            .lock()
            .unwrap()
            .insert("/docs/broken.html".into(), (html, Vec::new(), StatusCode::INTERNAL_SERVER_ERROR));
        site
    }

    /// A site with nothing on it yet.
    fn empty() -> Arc<Self> {
        Arc::new(Site { pages: Mutex::default(), log: Mutex::default() })
    }

    /// `path` answers with a redirect to `to`.
    fn redirect(&self, path: &str, to: &str) {
        self.pages.lock().unwrap().insert(path.into(), ("", to.as_bytes().to_vec(), StatusCode::FOUND));
    }

    fn put(&self, path: &str, content_type: &'static str, body: &str) {
        self.pages.lock().unwrap().insert(path.into(), (content_type, body.as_bytes().to_vec(), StatusCode::OK));
    }

    fn remove(&self, path: &str) {
        self.pages.lock().unwrap().remove(path);
    }

    /// Starts serving on 127.0.0.1; returns the address.
    async fn serve(self: &Arc<Self>) -> SocketAddr {
        self.serve_on("127.0.0.1").await
    }

    /// Starts serving on `ip` (any of 127.0.0.0/8 on Linux); returns the address.
    async fn serve_on(self: &Arc<Self>, ip: &str) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(answer).with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        address
    }

    /// The requests since the last call.
    fn requests(&self) -> Vec<Request> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

async fn answer(State(site): State<Arc<Site>>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_string();
    let page = site.pages.lock().unwrap().get(&path).cloned();
    let response = match page {
        None => StatusCode::NOT_FOUND.into_response(),
        Some((_, to, status)) if status.is_redirection() => {
            (status, [(header::LOCATION, String::from_utf8(to).unwrap())]).into_response()
        }
        Some((_, _, status)) if status != StatusCode::OK => status.into_response(),
        Some((content_type, body, _)) => {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            body.hash(&mut hasher);
            let etag = format!("\"{:x}\"", hasher.finish());
            if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v == etag.as_str()) {
                (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response()
            } else {
                ([(header::CONTENT_TYPE, content_type.to_string()), (header::ETAG, etag)], body).into_response()
            }
        }
    };
    site.log.lock().unwrap().push(Request { path, status: response.status(), at: Instant::now() });
    response
}

fn paths(requests: &[Request], status: StatusCode) -> Vec<&str> {
    requests.iter().filter(|r| r.status == status).map(|r| r.path.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_site_is_crawled_politely_within_its_folder_and_a_second_run_fetches_only_what_changed() {
    let site = Site::staff_docs();
    let address = site.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let app = App::load(config(dir.path(), ""), Load::WithoutGenerator).await.unwrap();
    let kb = app.kb_for_ingest("web").await.unwrap();
    let mut settings = Settings::new(&app.config.chunking);
    settings.web.crawl = true;
    settings.web.guard.allow_private = true;
    settings.web.delay = Duration::from_millis(100);
    settings.web.cache = Some(dir.path().join("state/web/web.json"));
    let start = [parse_url(&format!("http://{address}/docs/")).unwrap()];
    let url = |path: &str| format!("http://{address}{path}");
    // A cache folder left open to others (by an older version, say) is closed.
    std::fs::create_dir_all(dir.path().join("state/web")).unwrap();
    std::fs::set_permissions(dir.path().join("state/web"), std::fs::Permissions::from_mode(0o755)).unwrap();

    let first = ingest_web(&kb, app.embedder.as_ref(), &start, &settings, Quiet).await.unwrap();
    let mode = |path: &str| std::fs::metadata(dir.path().join(path)).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode("state/web"), mode("state/web/web.json")), (0o700, 0o600), "the page cache is the owner's alone");
    let requests = site.requests();
    let fetched = paths(&requests, StatusCode::OK);
    for page in ["/robots.txt", "/docs/", "/docs/leave.html", "/docs/benefits.html", "/docs/notes.txt"] {
        assert!(fetched.contains(&page), "{page} fetched: {requests:?}");
    }
    // Nothing robots.txt disallows, nothing outside /docs/ or on another host.
    assert!(requests.iter().all(|r| !r.path.contains("private") && r.path != "/about.html" && r.path != "/"));
    assert_eq!(requests.iter().filter(|r| r.path == "/docs/leave.html").count(), 1, "each page once");
    // Requests 100 ms apart, as the server sees them: the first on a connection also waited
    // for it to be set up, which on a busy machine takes tens of milliseconds, so the gap
    // after it looks that much shorter.
    for pair in requests.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(60), "{} then {} after {gap:?}", pair[0].path, pair[1].path);
    }
    let why = |name: &str| first.skipped.iter().find(|s| s.path.ends_with(name)).map(|s| (s.reason, s.message.clone()));
    let (reason, message) = why("broken.html").expect("the page that fails is skipped");
    assert_eq!(reason, SkipReason::Unreachable);
    assert!(message.contains(&url("/docs/broken.html")) && message.contains("500"), "{message}");
    let (reason, message) = why("logo.png").expect("the picture is skipped");
    assert_eq!(reason, SkipReason::WrongType);
    assert!(message.contains("image/png"), "{message}");
    // index.html (linked from leave.html) is the start page under another address.
    let (reason, message) = why("index.html").expect("the copy is skipped");
    assert_eq!(reason, SkipReason::Duplicate);
    assert!(message.contains(&format!("the same page as {}", url("/docs/"))), "{message}");
    assert_eq!((first.files, first.changed_files, first.skipped.len()), (7, 4, 3), "{first}");
    assert!(first.to_string().starts_with("7 pages"), "{first}");

    let chunks = kb.all_chunks().await.unwrap();
    let sick = chunks.iter().find(|c| c.text.contains("call your manager")).unwrap();
    assert_eq!(sick.source, url("/docs/leave.html"));
    assert_eq!(sick.location(), "§ Leave › Sick days");
    assert!(chunks.iter().all(|c| !c.text.contains("Home") && !c.text.contains("About")), "navigation is left out");

    // Unchanged: every stored page is asked for with its ETag and answers 304.
    let again = ingest_web(&kb, app.embedder.as_ref(), &start, &settings, Quiet).await.unwrap();
    let requests = site.requests();
    // Only robots.txt and the picture (skipped, so not stored) come whole again.
    let whole = paths(&requests, StatusCode::OK);
    assert!(whole.iter().all(|p| ["/robots.txt", "/docs/logo.png"].contains(p)), "{whole:?}");
    assert_eq!(paths(&requests, StatusCode::NOT_MODIFIED).len(), 5, "the four stored and the copy: {requests:?}");
    assert_eq!((again.unchanged_files, again.chunks_embedded, again.removed_files), (4, 0, 0), "{again}");

    // One page changed, one gone: only the changed one is downloaded, the gone one removed.
    site.put("/docs/leave.html", "text/html", &LEAVE.replace("before nine", "before eight"));
    site.remove("/docs/benefits.html");
    let changed = ingest_web(&kb, app.embedder.as_ref(), &start, &settings, Quiet).await.unwrap();
    let requests = site.requests();
    assert!(paths(&requests, StatusCode::OK).contains(&"/docs/leave.html"), "{requests:?}");
    assert!(!paths(&requests, StatusCode::OK).contains(&"/docs/"), "{requests:?}");
    assert_eq!((changed.changed_files, changed.removed_files), (1, 1), "{changed}");
    let chunks = kb.all_chunks().await.unwrap();
    assert!(chunks.iter().any(|c| c.text.contains("before eight")));
    assert!(chunks.iter().all(|c| !c.source.ends_with("benefits.html") && !c.text.contains("before nine")));

    // A start page that fails leads nowhere; that is not taken for the site being gone.
    site.pages.lock().unwrap().get_mut("/docs/").unwrap().2 = StatusCode::SERVICE_UNAVAILABLE;
    let failed = ingest_web(&kb, app.embedder.as_ref(), &start, &settings, Quiet).await.unwrap();
    assert_eq!((failed.files, failed.skipped.len(), failed.chunks_removed), (1, 1, 0), "{failed}");
    site.put("/docs/", "text/html", INDEX);

    // A page limit stops the crawl early; pages it did not reach are not taken for gone.
    settings.web.max_pages = 2;
    let limited = ingest_web(&kb, app.embedder.as_ref(), &start, &settings, Quiet).await.unwrap();
    assert_eq!((limited.files, limited.removed_files), (2, 0), "{limited}");
    assert!(kb.all_chunks().await.unwrap().iter().any(|c| c.source.ends_with("notes.txt")));
}

#[tokio::test(flavor = "multi_thread")]
async fn lore_ingest_takes_a_web_source_crawls_its_sitemap_and_answers_cite_the_page_and_section() {
    let site = Site::staff_docs();
    site.put("/docs/hidden.html", "text/html", "<main><h1>Parking</h1><p>Staff park behind the warehouse.</p></main>");
    let address = site.serve().await;
    let sitemap = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
        <url><loc>http://{address}/docs/leave.html</loc></url><url><loc>http://{address}/docs/hidden.html</loc></url>
        <url><loc>http://{address}/about.html</loc></url><url><loc>http://{address}/docs/away.html</loc></url></urlset>"#
    );
    site.put("/sitemap.xml", "application/xml", &sitemap);
    // Another host (by name): its robots.txt was not read, so the redirect is not followed.
    let elsewhere = format!("http://localhost:{}/docs/leave.html", address.port());
    site.pages
        .lock()
        .unwrap()
        .insert("/docs/away.html".into(), ("", elsewhere.into_bytes(), StatusCode::MOVED_PERMANENTLY));
    let dir = tempfile::tempdir().unwrap();
    let kb = format!(
        "knowledge_bases:\n  web:\n    sources: [\"http://{address}/docs/\"]\n    crawl: true\n    crawl_delay_ms: 0\n    allow_private_addresses: true\n"
    );
    let config = config(dir.path(), &kb);

    let out = lore(&config.file, &["ingest", "--kb", "web"]);
    assert!(out.contains("web: 4 pages (0 unchanged, 3 changed, 0 removed, 1 skipped: 1 link outside)"), "{out}");
    let fetched: Vec<String> = site.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(fetched.iter().filter(|p| *p == "/docs/leave.html").count(), 1, "{fetched:?}");
    assert!(fetched.contains(&"/docs/hidden.html".to_string()), "the sitemap's pages: {fetched:?}");
    assert!(
        !fetched.iter().any(|p| p.contains("benefits") || p == "/about.html"),
        "only the sitemap's, in scope: {fetched:?}"
    );

    let out = lore(&config.file, &["ask", "--kb", "web", "When must I call my manager if I am ill?"]);
    assert!(out.contains(&format!("http://{address}/docs/leave.html")) && out.contains("§ Leave › Sick days"), "{out}");

    // A knowledge base without the switch: the same site is refused, unless the command
    // line allows it.
    let notes = format!("http://{address}/docs/notes.txt");
    let out = lore(&config.file, &["ingest", "--kb", "notes", &notes]);
    assert!(out.contains("1 skipped: 1 unreachable"), "{out}");
    let out = lore(&config.file, &["ingest", "--kb", "notes", "--allow-private", &notes]);
    assert!(out.contains("1 changed"), "{out}");

    // A bad address in the config is named with its key.
    let text = std::fs::read_to_string(&config.file).unwrap().replace(&format!("http://{address}/docs/"), "https://");
    std::fs::write(&config.file, text).unwrap();
    let failed = Command::new(lore_tests::lore_binary())
        .args(["--config", &config.file.display().to_string(), "check"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success() && stderr.contains("knowledge_bases.web.sources.0"), "{stderr}");
}

/// A one-page site about `topic` at /docs/.
async fn one_page_site(ip: &str, topic: &str) -> (Arc<Site>, SocketAddr) {
    let site = Site::empty();
    site.put("/docs/", "text/html", &format!("<main><h1>{topic}</h1><p>All about {topic}.</p></main>"));
    let address = site.serve_on(ip).await;
    (site, address)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_crawler_connects_only_to_public_addresses_unless_the_knowledge_base_allows_private_ones() {
    // 127.0.0.2 and .3 stand in for two public hosts; 127.0.0.1 (and `localhost`) is the
    // machine itself, where nothing may be fetched from.
    let (public, public_at) = one_page_site("127.0.0.2", "Leave").await;
    let (other, other_at) = one_page_site("127.0.0.3", "Parking").await;
    let (internal, internal_at) = one_page_site("127.0.0.1", "Secrets").await;
    let port = internal_at.port();
    public.redirect("/by-name/", &format!("http://localhost:{port}/docs/"));
    public.redirect("/by-address/", &format!("http://127.0.0.1:{port}/docs/"));
    public.redirect("/elsewhere/", &format!("http://{other_at}/docs/"));
    // A sitemap on another host is not read, public or not.
    public.put("/robots.txt", "text/plain", &format!("User-agent: *\nSitemap: http://{other_at}/sitemap.xml\n"));
    other.put("/sitemap.xml", "application/xml", "<urlset></urlset>");

    let dir = tempfile::tempdir().unwrap();
    let app = App::load(config(dir.path(), ""), Load::WithoutGenerator).await.unwrap();
    let kb = app.kb_for_ingest("web").await.unwrap();
    let mut settings = Settings::new(&app.config.chunking);
    (settings.web.crawl, settings.web.delay) = (true, Duration::ZERO);
    settings.web.guard.treated_as_public = [public_at.ip(), other_at.ip()].into();
    let start = |address: String| parse_url(&address).unwrap();
    let starts = [
        start(format!("http://{public_at}/by-name/")),
        start(format!("http://{public_at}/by-address/")),
        start(format!("http://127.0.0.1:{port}/docs/")),
        start(format!("http://{public_at}/elsewhere/")),
    ];
    let report = ingest_web(&kb, app.embedder.as_ref(), &starts, &settings, Quiet).await.unwrap();
    let why = |start: &reqwest::Url| {
        let skipped = report.skipped.iter().find(|s| s.path.to_string_lossy() == start.as_str());
        skipped.unwrap_or_else(|| panic!("{start} refused: {report}")).message.clone()
    };
    let (by_name, by_address, direct) = (why(&starts[0]), why(&starts[1]), why(&starts[2]));
    assert!(by_name.contains("refused: localhost resolves to") && by_name.contains("a loopback address"), "{by_name}");
    assert!(by_address.contains("refused: 127.0.0.1 is a loopback address"), "{by_address}");
    assert!(direct.contains("refused: 127.0.0.1 is a loopback address"), "{direct}");
    for message in [by_name, by_address, direct] {
        assert!(message.contains("set allow_private_addresses: true on the knowledge base"), "{message}");
    }
    assert!(internal.requests().is_empty(), "nothing reached the machine itself");
    // With `crawl`, a start page may move to another (public) host; its sitemap elsewhere is
    // not read.
    let chunks = kb.all_chunks().await.unwrap();
    assert!(chunks.iter().any(|c| c.text.contains("All about Parking")), "{report}");
    assert!(other.requests().iter().all(|r| r.path != "/sitemap.xml"));

    // Without `crawl`, a start page that moves to another host is not followed.
    settings.web.crawl = false;
    let report = ingest_web(&kb, app.embedder.as_ref(), &starts[3..], &settings, Quiet).await.unwrap();
    assert!(report.skipped[0].message.contains("only `crawl` follows a start page to another host"), "{report}");

    // The knowledge base's switch lets the crawler reach private addresses.
    (settings.web.crawl, settings.web.guard.allow_private) = (true, true);
    let report = ingest_web(&kb, app.embedder.as_ref(), &starts[..3], &settings, Quiet).await.unwrap();
    assert!(report.skipped.is_empty(), "{report}");
    assert!(internal.requests().iter().any(|r| r.path == "/docs/"));
}

/// Runs the `lore` binary with `config` and returns its standard output.
fn lore(config: &Path, args: &[&str]) -> String {
    let output = Command::new(lore_tests::lore_binary())
        .args(["--config", &config.display().to_string()])
        .args(args)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "lore {args:?} failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}
