//! `parsing:`: what reading one document may take, in the child process that parses it.

use serde::Deserialize;

use super::{Config, ConfigError};

/// The `parsing:` section: how much one document's parse may take.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParsingLimits {
    /// Memory one document's parse may take, in MiB, beyond the parser program's own (the
    /// child's address space, `RLIMIT_AS`; the document's bytes count). A document that
    /// needs more, such as a PDF stream that inflates to gigabytes, is skipped; so is one
    /// whose text comes to more than this.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// CPU seconds one document's parse may use (`RLIMIT_CPU`); a document that needs more
    /// is skipped.
    #[serde(default = "default_cpu_secs")]
    pub cpu_secs: u64,
    /// Seconds one document's parse may take from start to end, waiting for the CPU
    /// included; then the parser is killed and the document skipped.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_memory_mib() -> u64 {
    1024
}
fn default_cpu_secs() -> u64 {
    60
}
fn default_timeout_secs() -> u64 {
    120
}

impl Default for ParsingLimits {
    fn default() -> Self {
        Self { memory_mib: default_memory_mib(), cpu_secs: default_cpu_secs(), timeout_secs: default_timeout_secs() }
    }
}

impl ParsingLimits {
    /// The first key (below `parsing.`) whose value cannot be used, and why.
    pub fn invalid(&self) -> Option<(&'static str, &'static str)> {
        if self.memory_mib < 16 {
            return Some(("memory_mib", "must be at least 16 (a parser needs some memory of its own)"));
        }
        if self.cpu_secs == 0 {
            return Some(("cpu_secs", "must be at least 1"));
        }
        if self.timeout_secs == 0 {
            return Some(("timeout_secs", "must be at least 1"));
        }
        None
    }
}

impl Config {
    /// `parsing`: limits a parser can work under.
    pub(super) fn check_parsing(&self) -> Result<(), ConfigError> {
        match self.parsing.invalid() {
            Some((key, why)) => Err(self.error(&format!("parsing.{key}"), why)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn limits_of_zero_are_refused_by_key() {
        assert_eq!(ParsingLimits::default().invalid(), None);
        assert_eq!(ParsingLimits { cpu_secs: 0, ..ParsingLimits::default() }.invalid().unwrap().0, "cpu_secs");
        assert_eq!(ParsingLimits { timeout_secs: 0, ..ParsingLimits::default() }.invalid().unwrap().0, "timeout_secs");
        assert_eq!(ParsingLimits { memory_mib: 0, ..ParsingLimits::default() }.invalid().unwrap().0, "memory_mib");
    }

    #[test]
    fn the_config_takes_the_limits_and_names_the_key_of_a_bad_one() {
        let models = "models:\n  generator:\n    path: /m/gen.gguf\n  embedder:\n    path: /m/emb.gguf\n";
        let parse = |parsing: &str| Config::parse(Path::new("lore.yaml"), &format!("{models}{parsing}"));
        assert_eq!(parse("").unwrap().parsing, ParsingLimits { memory_mib: 1024, cpu_secs: 60, timeout_secs: 120 });
        let set = parse("parsing:\n  memory_mib: 512\n  cpu_secs: 30\n").unwrap().parsing;
        assert_eq!(set, ParsingLimits { memory_mib: 512, cpu_secs: 30, timeout_secs: 120 });
        let error = parse("parsing:\n  memory_mib: 512\n  timeout_secs: 0\n").unwrap_err();
        assert_eq!((error.key.as_str(), error.line), ("parsing.timeout_secs", Some(8)), "{error}");
        assert_eq!(parse("parsing:\n  memory: 512\n").unwrap_err().key, "parsing.memory");
    }
}
