//! `knowledge_bases:` and `chunking:`: what is ingested into each knowledge base (files,
//! folders, web pages), how it is cut into chunks, and how large a file may be.

use std::path::PathBuf;

pub use lore_knowledge::store::valid_kb_name;
use lore_knowledge::LanguageChoice;
use serde::Deserialize;

use super::{Config, ConfigError, Source};

/// One knowledge base: its sources and how they are ingested.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeBaseConfig {
    /// Files and folders ingested by `lore ingest --kb NAME` (folders: every supported
    /// file below). An `http://` or `https://` address is a web page: it moves to
    /// [`Self::web_sources`] when the config is read.
    #[serde(default)]
    pub sources: Vec<PathBuf>,
    /// The web pages among the `sources`, as written.
    #[serde(skip)]
    pub web_sources: Vec<String>,
    /// With web sources: also fetch the pages below each on its host (its sitemap's, else
    /// those its links lead to).
    #[serde(default)]
    pub crawl: bool,
    /// Pages fetched at most per web source when crawling.
    #[serde(default = "default_max_pages")]
    pub max_pages: usize,
    /// Milliseconds between two requests to a host (its robots.txt may ask for more).
    #[serde(default = "default_crawl_delay_ms")]
    pub crawl_delay_ms: u64,
    /// With web sources: let the crawler connect to loopback, private, link-local and other
    /// non-public addresses (an intranet site). Off, a page, redirect or sitemap leading
    /// there is refused, whatever name it goes by.
    #[serde(default)]
    pub allow_private_addresses: bool,
    /// How its files are cut into chunks; default: the top-level `chunking`.
    pub chunking: Option<Chunking>,
    /// Files larger than this are skipped with a warning naming the file and its size
    /// (default 20 MiB).
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// `lore run` watches the `sources` and re-ingests them when files change (debounced,
    /// one ingest at a time), so bots answer from what was just saved.
    #[serde(default)]
    pub watch: bool,
    /// Questions the generator writes for each chunk at ingest, stored as extra search
    /// keys that lead to the chunk (doc2query); 0 (the default) writes none, and drops
    /// those written before. Costs a few generations per chunk at ingest, nothing per
    /// question asked.
    #[serde(default)]
    pub generated_questions: u32,
    /// The language its text is written in: `en`, `he`, or `auto` (the default: detected
    /// from what is first ingested, and kept). It chooses how passages and questions are
    /// matched by words (Hebrew: prefixes, final letters and points), and the prompts and
    /// "I don't know" of the bots answering from it. Stored with the knowledge base;
    /// changing it re-indexes the knowledge base at its next ingest.
    #[serde(default)]
    pub language: LanguageChoice,
}

/// More questions per chunk add little: they start to repeat each other.
pub const MAX_GENERATED_QUESTIONS: u32 = 20;

/// Files over this many bytes are skipped unless a knowledge base says otherwise.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 20 * 1024 * 1024;

fn default_max_pages() -> usize {
    500
}

fn default_crawl_delay_ms() -> u64 {
    500
}

fn default_max_file_bytes() -> u64 {
    DEFAULT_MAX_FILE_BYTES
}

/// How files are cut into chunks (`chunking:`, or a knowledge base's own).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunking {
    /// Largest chunk, in embedder tokens.
    #[serde(default = "default_chunk_tokens")]
    pub max_tokens: usize,
    /// Tokens repeated from the end of one chunk at the start of the next.
    #[serde(default = "default_overlap_tokens")]
    pub overlap_tokens: usize,
    /// `paragraph`: chunks of whole paragraphs where they fit; `sentence`: one sentence each.
    #[serde(default)]
    pub unit: ChunkUnit,
}

impl Default for Chunking {
    fn default() -> Self {
        Self {
            max_tokens: default_chunk_tokens(),
            overlap_tokens: default_overlap_tokens(),
            unit: ChunkUnit::default(),
        }
    }
}

fn default_chunk_tokens() -> usize {
    160
}
fn default_overlap_tokens() -> usize {
    32
}

/// What a chunk is made of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChunkUnit {
    /// Whole paragraphs where they fit.
    #[default]
    Paragraph,
    /// One sentence each.
    Sentence,
}

impl KnowledgeBaseConfig {
    /// Its web pages set apart from its files, and the files expanded.
    pub(super) fn read_sources(&mut self, name: &str, source: &Source) -> Result<(), ConfigError> {
        let mut files = Vec::new();
        for (i, s) in self.sources.iter().enumerate() {
            let key = format!("knowledge_bases.{name}.sources.{i}");
            match s.to_str().filter(|s| is_url(s)) {
                Some(address) => {
                    parse_url(address).map_err(|why| source.error(&key, why))?;
                    self.web_sources.push(address.to_string());
                }
                None => files.push(source.expand(s, &key)?),
            }
        }
        self.sources = files;
        Ok(())
    }
}

impl Config {
    /// Chunking for a knowledge base: its own, else the defaults.
    pub fn chunking_for(&self, kb: &str) -> &Chunking {
        self.knowledge_bases.get(kb).and_then(|k| k.chunking.as_ref()).unwrap_or(&self.chunking)
    }

    /// The language knowledge base `kb` is configured in; `None` for `auto` (or a
    /// knowledge base the config does not list): the one stored at ingest.
    pub fn kb_language(&self, kb: &str) -> Option<lore_knowledge::Language> {
        match self.knowledge_bases.get(kb)?.language {
            LanguageChoice::Fixed(language) => Some(language),
            LanguageChoice::Auto => None,
        }
    }

    /// A `chunking` section (at `key`) the chunker can follow.
    pub(super) fn check_chunking(&self, key: &str, c: &Chunking) -> Result<(), ConfigError> {
        if c.max_tokens < 16 {
            return Err(self.error(&format!("{key}.max_tokens"), "must be at least 16"));
        }
        if c.overlap_tokens * 2 > c.max_tokens {
            return Err(self.error(&format!("{key}.overlap_tokens"), "must be at most half of max_tokens"));
        }
        Ok(())
    }

    /// `knowledge_bases`: names the store takes, and settings ingest can follow.
    pub(super) fn check_knowledge_bases(&self) -> Result<(), ConfigError> {
        for (name, kb) in &self.knowledge_bases {
            if !valid_kb_name(name) {
                return Err(self.error(
                    &format!("knowledge_bases.{name}"),
                    "a knowledge base name may use letters, digits, '-' and '_' only",
                ));
            }
            if let Some(c) = &kb.chunking {
                self.check_chunking(&format!("knowledge_bases.{name}.chunking"), c)?;
            }
            if kb.max_pages == 0 {
                return Err(self.error(&format!("knowledge_bases.{name}.max_pages"), "must be at least 1"));
            }
            if kb.generated_questions > MAX_GENERATED_QUESTIONS {
                let why = format!("at most {MAX_GENERATED_QUESTIONS} (each is a generation per chunk at ingest)");
                return Err(self.error(&format!("knowledge_bases.{name}.generated_questions"), &why));
            }
            if kb.watch && kb.sources.is_empty() {
                let why = "needs file or folder `sources` to watch (web pages are fetched by `lore ingest`)";
                return Err(self.error(&format!("knowledge_bases.{name}.watch"), why));
            }
        }
        Ok(())
    }

    /// Every file or folder source is there.
    pub(super) fn validate_sources(&self) -> Result<(), ConfigError> {
        for (name, kb) in &self.knowledge_bases {
            for (i, s) in kb.sources.iter().enumerate() {
                if !s.exists() {
                    return Err(self.error(
                        &format!("knowledge_bases.{name}.sources.{i}"),
                        format!("{} does not exist", s.display()),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether a source names a web page rather than a file.
pub fn is_url(source: &str) -> bool {
    let lower = source.get(..8).unwrap_or(source).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// A start page's address, or what is wrong with it.
pub fn parse_url(source: &str) -> Result<url::Url, String> {
    let mut url = url::Url::parse(source).map_err(|e| format!("{source} is not a web address: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("{source} is not an http:// or https:// address"));
    }
    url.set_fragment(None);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use lore_knowledge::{Language, LanguageChoice};

    use super::super::testing::{parse, OK};

    #[test]
    fn watch_needs_sources_and_max_file_bytes_defaults_to_20_mib() {
        let cfg = parse(OK).unwrap();
        assert_eq!(cfg.knowledge_bases["docs"].max_file_bytes, 20 * 1024 * 1024);
        assert!(!cfg.knowledge_bases["docs"].watch);
        let text = OK.replace("    sources: [notes]\n", "    watch: true\n");
        let e = parse(&text).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("knowledge_bases.docs.watch", Some(8)), "{e}");
    }
    #[test]
    fn language_is_auto_unless_set_and_a_bot_may_speak_another() {
        let cfg = parse(OK).unwrap();
        assert_eq!(cfg.knowledge_bases["docs"].language, LanguageChoice::Auto);
        assert_eq!(cfg.kb_language("docs"), None, "auto: the language stored at ingest");
        let text = OK.replace("    sources: [notes]\n", "    sources: [notes]\n    language: he\n");
        let cfg = parse(&text).unwrap();
        assert_eq!(cfg.kb_language("docs"), Some(Language::Hebrew));
        assert_eq!(cfg.bots["helper"].language, None, "a bot speaks its knowledge base's language");
        let text = text.replace("    knowledge_base: docs\n", "    knowledge_base: docs\n    language: en\n");
        assert_eq!(parse(&text).unwrap().bots["helper"].language, Some(Language::English), "or its own");
    }

    #[test]
    fn a_wrong_language_names_file_line_and_key() {
        let text = OK.replace("    sources: [notes]\n", "    sources: [notes]\n    language: hebrew\n");
        let e = parse(&text).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("knowledge_bases.docs.language", Some(9)), "{e}");
        assert_eq!(
            e.to_string(),
            "lore.yaml:9: knowledge_bases.docs.language: unknown language \"hebrew\": use en or he, or auto (detected at ingest)"
        );
        let text = OK.replace("    knowledge_base: docs\n", "    knowledge_base: docs\n    language: auto\n");
        let e = parse(&text).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("bots.helper.language", Some(12)), "{e}");
        assert!(e.message.contains("use en or he"), "{e}");
    }
}
