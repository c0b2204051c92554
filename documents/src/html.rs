//! HTML: the page's main content (`<main>`, else `<article>`, else the body) without what
//! a reader skips (navigation, scripts, styles, forms, cookie banners, page headers and
//! footers); headings start sections, each table row is one line of `cell | cell`.

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
    walker.children(main.unwrap_or_else(|| document.root_element()));
    walker.blocks
}

struct Walker {
    blocks: Vec<Block>,
    path: Vec<(usize, String)>,
}

impl Walker {
    fn element(&mut self, element: ElementRef<'_>) {
        let name = element.value().name();
        if skipped(element) {
            return;
        }
        if let Some(level) = heading_level(name) {
            let title = squeeze(&text_of(element));
            if !title.is_empty() {
                self.path.retain(|(l, _)| *l < level);
                self.path.push((level, title.clone()));
                let section = self.path.iter().map(|(_, t)| t.clone()).collect();
                self.blocks.push(Block { text: format!("{title}\n\n"), section, ..Block::default() });
            }
            return;
        }
        match name {
            "table" => return self.table(element),
            "pre" => return self.push_preformatted(&text_of(element)),
            "br" => return,
            _ if PARAGRAPHS.contains(&name) && !has_block_children(element) => return self.push(&text_of(element)),
            _ => {}
        }
        self.children(element);
    }

    /// A container: its elements in order; loose text between them is a paragraph.
    fn children(&mut self, element: ElementRef<'_>) {
        let mut loose = String::new();
        for child in element.children() {
            match child.value() {
                Node::Text(t) => loose.push_str(t),
                Node::Element(_) => {
                    let Some(child) = ElementRef::wrap(child) else { continue };
                    if is_inline(child.value().name()) && !skipped(child) {
                        loose.push_str(&text_of(child));
                        continue;
                    }
                    self.push(&std::mem::take(&mut loose));
                    self.element(child);
                }
                _ => {}
            }
        }
        self.push(&loose);
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

/// The text inside `element`, leaving out what is skipped.
fn text_of(element: ElementRef<'_>) -> String {
    let mut text = String::new();
    for child in element.children() {
        match child.value() {
            Node::Text(t) => text.push_str(t),
            Node::Element(e) => {
                if let Some(child) = ElementRef::wrap(child).filter(|c| !skipped(*c)) {
                    let block = !is_inline(e.name());
                    if block {
                        text.push(' ');
                    }
                    text.push_str(&text_of(child));
                    if block {
                        text.push(' ');
                    }
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
}
