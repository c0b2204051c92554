//! What a crawler reads in a page or a sitemap: the links to follow. The fetching itself
//! (robots.txt, politeness, conditional requests) is the daemon's.

use scraper::{Html, Selector};

/// The `href` of every link in an HTML page, as written, and the page's `<base href>`
/// when it has one (relative links resolve against it instead of the page's address).
pub fn links(html: &str) -> (Vec<String>, Option<String>) {
    let document = Html::parse_document(html);
    let select = |s: &str| Selector::parse(s).expect("a valid selector");
    let base = document.select(&select("base[href]")).next().and_then(|b| b.value().attr("href")).map(str::to_string);
    let links = document
        .select(&select("a[href], area[href]"))
        .filter(|a| !a.value().attr("rel").is_some_and(|r| r.split_whitespace().any(|w| w == "nofollow")))
        .filter_map(|a| a.value().attr("href"))
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .collect();
    (links, base)
}

/// The addresses a sitemap lists: pages (`<urlset>`), or further sitemaps
/// (`<sitemapindex>`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sitemap {
    pub pages: Vec<String>,
    pub sitemaps: Vec<String>,
}

/// Reads a sitemap (sitemaps.org protocol). Text that is not one yields nothing.
pub fn sitemap(xml: &str) -> Sitemap {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = Sitemap::default();
    let mut index = false;
    let mut loc: Option<String> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => match e.local_name().as_ref() {
                "sitemapindex" => index = true,
                "loc" => loc = Some(String::new()),
                _ => {}
            },
            Ok(Event::End(e)) if e.local_name().as_ref() == "loc" => {
                let address = loc.take().unwrap_or_default().trim().to_string();
                if !address.is_empty() {
                    if index { &mut out.sitemaps } else { &mut out.pages }.push(address);
                }
            }
            Ok(Event::Text(t)) => {
                if let Some(loc) = &mut loc {
                    loc.push_str(&t.xml10_content());
                }
            }
            Ok(Event::GeneralRef(r)) => {
                if let Some(loc) = &mut loc {
                    loc.extend(crate::office::entity(&r));
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_skip_nofollow_and_report_the_base() {
        let html = r#"<html><head><base href="/docs/"></head><body>
            <a href="leave.html">Leave</a> <a href=" /x#top ">X</a> <a>none</a>
            <a href="/login" rel="nofollow">Log in</a></body></html>"#;
        let (links, base) = links(html);
        assert_eq!(links, ["leave.html", "/x#top"]);
        assert_eq!(base.as_deref(), Some("/docs/"));
    }

    #[test]
    fn sitemaps_list_pages_or_further_sitemaps() {
        let pages = r#"<?xml version="1.0" encoding="UTF-8"?>
            <urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
              <url><loc> https://example.org/a?x=1&amp;y=2 </loc><lastmod>2026-01-01</lastmod></url>
              <url><loc>https://example.org/b</loc></url>
            </urlset>"#;
        assert_eq!(sitemap(pages).pages, ["https://example.org/a?x=1&y=2", "https://example.org/b"]);
        let index = r#"<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
              <sitemap><loc>https://example.org/docs.xml</loc></sitemap></sitemapindex>"#;
        assert_eq!(sitemap(index), Sitemap { pages: vec![], sitemaps: vec!["https://example.org/docs.xml".into()] });
        assert_eq!(sitemap("<html>not a sitemap"), Sitemap::default());
    }
}
