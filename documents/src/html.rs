//! HTML: the page's main content (`<main>`, else `<article>`, else the body) without what
//! a reader skips (navigation, scripts, styles, forms, cookie banners, page headers and
//! footers); headings start sections, each table row is one line of `cell | cell`.

use ego_tree::iter::Edge;
use scraper::{ElementRef, Html, Node, Selector};

use crate::{squeeze, Block};

/// Elements whose content is never the page's text.
const SKIPPED: [&str; 15] = [
    "script", "style", "noscript", "template", "nav", "aside", "form", "button", "select", "svg", "iframe", "dialog",
    "head", "menu", "object",
];

/// ARIA roles of the same.
const SKIPPED_ROLES: [&str; 6] = ["navigation", "banner", "contentinfo", "search", "dialog", "alertdialog"];

/// Words in an id or class that mark consent banners and the like.
const BANNER_WORDS: [&str; 6] = ["cookie", "cookies", "consent", "gdpr", "newsletter", "popup"];

/// Elements read as one paragraph.
const PARAGRAPHS: [&str; 12] =
    ["p", "li", "dt", "dd", "blockquote", "pre", "figcaption", "caption", "summary", "address", "td", "th"];

pub(crate) fn blocks(text: &str) -> Vec<Block> {
    let document = Html::parse_document(text);
    let main = ["main", "[role=main]", "article", "body"]
        .iter()
        .find_map(|s| document.select(&Selector::parse(s).expect("a valid selector")).next());
    let mut walker = Walker { blocks: vec![Block::default()], path: Vec::new() };
    // The chosen root is read whatever its classes say (a body may carry `cookies-set`).
    walker.walk(main.unwrap_or_else(|| document.root_element()));
    walker.blocks
}

struct Walker {
    blocks: Vec<Block>,
    path: Vec<(usize, String)>,
}

/// A container being read: its children not read yet, and the loose text (text and inline
/// elements between block elements) gathered since the last block element.
struct Open<'a> {
    children: ego_tree::iter::Children<'a, Node>,
    loose: String,
}

impl Walker {
    /// Reads `root`'s content. The containers open on the way down are a stack on the heap,
    /// not calls: a page may nest elements hundreds of thousands deep, deeper than any
    /// thread's stack could follow.
    fn walk(&mut self, root: ElementRef<'_>) {
        let mut open = vec![Open { children: root.children(), loose: String::new() }];
        while let Some(container) = open.last_mut() {
            let Some(child) = container.children.next() else {
                let loose = std::mem::take(&mut container.loose);
                open.pop();
                self.push(&loose);
                continue;
            };
            match child.value() {
                Node::Text(t) => container.loose.push_str(t),
                Node::Element(_) => {
                    let Some(child) = ElementRef::wrap(child) else { continue };
                    if is_inline(child.value().name()) && !skipped(child) {
                        container.loose.push_str(&text_of(child));
                        continue;
                    }
                    let loose = std::mem::take(&mut container.loose);
                    self.push(&loose);
                    if self.element(child) {
                        open.push(Open { children: child.children(), loose: String::new() });
                    }
                }
                _ => {}
            }
        }
    }

    /// Reads a block element that is read whole (a heading, a table, a paragraph), or
    /// returns `true` when it is a container whose children are to be read in turn.
    fn element(&mut self, element: ElementRef<'_>) -> bool {
        let name = element.value().name();
        if skipped(element) {
            return false;
        }
        if let Some(level) = heading_level(name) {
            let title = squeeze(&text_of(element));
            if !title.is_empty() {
                self.path.retain(|(l, _)| *l < level);
                self.path.push((level, title.clone()));
                let section = self.path.iter().map(|(_, t)| t.clone()).collect();
                self.blocks.push(Block { text: format!("{title}\n\n"), section, ..Block::default() });
            }
            return false;
        }
        match name {
            "table" => self.table(element),
            "pre" => self.push_preformatted(&text_of(element)),
            "br" => {}
            _ if PARAGRAPHS.contains(&name) && !has_block_children(element) => self.push(&text_of(element)),
            _ => return true,
        }
        false
    }

    fn table(&mut self, table: ElementRef<'_>) {
        let rows = Selector::parse("tr").expect("a valid selector");
        let cells = Selector::parse("th, td").expect("a valid selector");
        for row in table.select(&rows) {
            let line: Vec<String> = row.select(&cells).map(|c| squeeze(&text_of(c))).collect();
            if line.iter().any(|c| !c.is_empty()) {
                self.blocks.last_mut().expect("one block").text.push_str(&format!("{}\n", line.join(" | ")));
            }
        }
        self.blocks.last_mut().expect("one block").text.push('\n');
    }

    /// A paragraph, its inner whitespace squeezed.
    fn push(&mut self, text: &str) {
        self.push_preformatted(&squeeze(text));
    }

    /// Text whose line breaks and indents are its own (`<pre>`).
    fn push_preformatted(&mut self, text: &str) {
        let text = text.trim_end();
        if !text.trim().is_empty() {
            self.blocks.last_mut().expect("one block").text.push_str(&format!("{text}\n\n"));
        }
    }
}

fn heading_level(name: &str) -> Option<usize> {
    let level = name.strip_prefix('h')?.parse::<usize>().ok()?;
    (1..=6).contains(&level).then_some(level)
}

fn is_inline(name: &str) -> bool {
    matches!(
        name,
        "a" | "abbr"
            | "b"
            | "bdi"
            | "bdo"
            | "cite"
            | "code"
            | "data"
            | "dfn"
            | "em"
            | "i"
            | "kbd"
            | "mark"
            | "q"
            | "s"
            | "samp"
            | "small"
            | "span"
            | "strong"
            | "sub"
            | "sup"
            | "time"
            | "u"
            | "var"
            | "wbr"
    )
}

fn has_block_children(element: ElementRef<'_>) -> bool {
    element.children().filter_map(ElementRef::wrap).any(|c| {
        let name = c.value().name();
        PARAGRAPHS.contains(&name) || heading_level(name).is_some() || matches!(name, "ul" | "ol" | "table" | "div")
    })
}

fn skipped(element: ElementRef<'_>) -> bool {
    let e = element.value();
    let name = e.name();
    if SKIPPED.contains(&name) || e.attr("hidden").is_some() || e.attr("aria-hidden") == Some("true") {
        return true;
    }
    if e.attr("role").is_some_and(|r| SKIPPED_ROLES.contains(&r)) {
        return true;
    }
    // A page's own header and footer; an article's header holds its title and stays.
    if matches!(name, "header" | "footer")
        && !element.descendants().filter_map(ElementRef::wrap).any(|d| heading_level(d.value().name()).is_some())
    {
        return true;
    }
    // Whole words of the id and classes (`cookie-banner`, `consent`), not any substring.
    let marks = format!("{} {}", e.attr("id").unwrap_or(""), e.attr("class").unwrap_or("")).to_ascii_lowercase();
    marks.split(|c: char| !c.is_ascii_alphanumeric()).any(|word| BANNER_WORDS.contains(&word))
}

/// The text inside `element`, leaving out what is skipped; block elements inside are set
/// apart by spaces. Read edge by edge in document order (no recursion: see
/// [`Walker::walk`]); a skipped element's content is passed over until its closing edge.
fn text_of(element: ElementRef<'_>) -> String {
    let mut text = String::new();
    let mut skipping: Option<ego_tree::NodeId> = None;
    for edge in element.traverse() {
        let (node, opening) = match edge {
            Edge::Open(node) => (node, true),
            Edge::Close(node) => (node, false),
        };
        if node.id() == element.id() {
            continue;
        }
        if let Some(until) = skipping {
            if !opening && node.id() == until {
                skipping = None;
            }
            continue;
        }
        match node.value() {
            Node::Text(t) if opening => text.push_str(t),
            Node::Element(e) => {
                if opening && ElementRef::wrap(node).is_some_and(skipped) {
                    skipping = Some(node.id());
                } else if !is_inline(e.name()) {
                    text.push(' ');
                }
            }
            _ => {}
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_main_content_keeps_its_headings_and_tables_and_loses_the_rest() {
        let page = r#"<!doctype html><html><head><title>Policies</title><style>p{color:red}</style></head>
<body><header><a href="/">Home</a> | <a href="/about">About</a></header>
<nav><ul><li>Menu item</li></ul></nav>
<div id="cookie-banner">We use cookies. <button>Accept</button></div>
<main><h1>Leave</h1><p>Everyone gets   leave.</p>
<h2>Sick days</h2><p>Call your <b>manager</b> before 9.</p>
<table><tr><th>Days</th><th>Pay</th></tr><tr><td>1-3</td><td>full</td></tr></table>
<h2>Holidays</h2><ul><li>Book early.</li><li>Ask twice.</li></ul><script>track()</script></main>
<footer>© ACME</footer></body></html>"#;
        let blocks = blocks(page);
        let all: String = blocks.iter().map(|b| b.text.as_str()).collect();
        for gone in ["Home", "Menu item", "cookies", "Accept", "track", "color", "ACME"] {
            assert!(!all.contains(gone), "{gone:?} in {all:?}");
        }
        let sick = blocks.iter().find(|b| b.section == ["Leave", "Sick days"]).expect("the section");
        assert!(sick.text.contains("Call your manager before 9."), "{:?}", sick.text);
        assert!(sick.text.contains("Days | Pay\n1-3 | full\n"), "{:?}", sick.text);
        let holidays = blocks.iter().find(|b| b.section == ["Leave", "Holidays"]).expect("the section");
        assert!(holidays.text.contains("Book early.\n\nAsk twice."), "{:?}", holidays.text);
        assert!(all.contains("Everyone gets leave."), "{all:?}");
    }

    #[test]
    fn code_keeps_its_lines_and_a_root_is_read_whatever_its_classes() {
        let page = "<html><body class=\"cookies-not-set\"><p>Run this:</p><pre>def f():\n    return 1</pre>\
                    <div class=\"cookie-notice\">We use cookies.</div></body></html>";
        let all: String = blocks(page).iter().map(|b| b.text.clone()).collect();
        assert!(all.contains("Run this:") && all.contains("def f():\n    return 1"), "{all:?}");
        assert!(!all.contains("We use cookies"), "{all:?}");
    }

    #[test]
    fn html_nested_hundreds_of_thousands_deep_keeps_its_text_without_overflowing() {
        // Run on a thread with a small stack: the walk must not use stack per level.
        // Custom elements (containers to the walker) and spans (inline, read as text): the
        // HTML parser takes both in linear time, unlike nested `<div>`s, whose scope checks
        // make it quadratic (the sandbox's CPU limit is for those).
        let depth = 300_000;
        let page = format!(
            "<html><body><p>First words.</p>{}<h2>Deep heading</h2><p>{}deep words{}</p>{}<p>Last words.</p></body></html>",
            "<x-box>".repeat(depth),
            "<span>".repeat(depth),
            "</span>".repeat(depth),
            "</x-box>".repeat(depth)
        );
        let blocks = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || blocks(&page))
            .unwrap()
            .join()
            .expect("no stack overflow");
        let all: String = blocks.iter().map(|b| b.text.as_str()).collect();
        assert!(all.contains("First words."), "{all:?}");
        assert!(blocks[1].text.contains("deep words"), "{:?}", blocks[1].text);
        let last = blocks.last().unwrap();
        assert_eq!(last.section, ["Deep heading"]);
        assert!(last.text.contains("Last words."), "{:?}", last.text);
    }
}
