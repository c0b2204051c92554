//! Paths in the config: `~`, `${VAR}` and `${VAR:-default}` expanded, relative paths joined
//! to the config file's folder.

use std::path::{Path, PathBuf};

/// Expands `~`, `${VAR}` and `${VAR:-default}`; joins relative paths to `base`.
pub fn expand_path(p: &Path, base: &Path) -> Result<PathBuf, String> {
    let raw = p.to_str().ok_or_else(|| format!("path {} is not UTF-8", p.display()))?;
    rooted(expand_vars(raw)?, base)
}

/// An expanded path with `~` replaced and, when relative, joined to `base`.
pub(super) fn rooted(mut out: String, base: &Path) -> Result<PathBuf, String> {
    if out == "~" || out.starts_with("~/") {
        let home = std::env::var("HOME").map_err(|_| "HOME is not set, cannot expand ~".to_string())?;
        out = format!("{home}{}", &out[1..]);
    }
    let path = PathBuf::from(out);
    Ok(if path.is_relative() { base.join(path) } else { path })
}

/// Expands `${VAR}` and `${VAR:-default}`.
pub(super) fn expand_vars(raw: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').ok_or_else(|| format!("unclosed ${{ in {raw:?}"))? + start;
        let inner = &rest[start + 2..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match std::env::var(name).ok().filter(|v| !v.is_empty()) {
            Some(v) => out.push_str(&v),
            None => match default {
                Some(d) => out.push_str(d),
                None => return Err(format!("environment variable {name} is not set (used in {raw:?})")),
            },
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
