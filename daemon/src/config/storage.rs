//! Where the knowledge bases and this daemon's state are: `data_dir`, `state_dir` and the
//! `storage:` section for object storage.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::paths::{expand_vars, rooted};
use super::{Config, ConfigError, Source};

pub(super) fn default_data_dir() -> DataDir {
    DataDir::Folder(PathBuf::from("${LORE_DATA:-~/.local/share/lore}"))
}

fn default_object_store_state_dir() -> PathBuf {
    PathBuf::from("${XDG_STATE_HOME:-~/.local/state}/lore")
}

/// Where the knowledge bases are stored (`data_dir`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "PathBuf")]
pub enum DataDir {
    /// A local folder. As parsed it holds the text as written, which [`Config::parse`]
    /// expands and, when it names a URI, turns into [`DataDir::ObjectStore`].
    Folder(PathBuf),
    /// `s3://bucket/prefix` (the prefix may be empty).
    ObjectStore(String),
}

impl From<PathBuf> for DataDir {
    fn from(path: PathBuf) -> Self {
        DataDir::Folder(path)
    }
}

impl DataDir {
    /// The folder, unless the knowledge bases are in object storage.
    pub fn folder(&self) -> Option<&Path> {
        match self {
            DataDir::Folder(dir) => Some(dir),
            DataDir::ObjectStore(_) => None,
        }
    }
}

impl fmt::Display for DataDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataDir::Folder(dir) => write!(f, "{}", dir.display()),
            DataDir::ObjectStore(uri) => f.write_str(uri),
        }
    }
}

/// The `storage:` section: the object store behind an `s3://` `data_dir`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// An S3-compatible server's URL (MinIO, Cloudflare R2, Ceph, moto); default: AWS S3
    /// (or `AWS_ENDPOINT_URL`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The bucket's region; default: `AWS_REGION`, else what AWS reports for the bucket
    /// (`us-east-1` with another endpoint).
    #[serde(default)]
    pub region: Option<String>,
    /// Allows an `http://` endpoint (unencrypted: a server on this machine or a trusted
    /// network).
    #[serde(default)]
    pub allow_http: bool,
}

/// `data_dir` as written, expanded: a folder (relative to `base`), or an `s3://` URI.
pub(super) fn resolve_data_dir(written: &DataDir, base: &Path) -> Result<DataDir, String> {
    let raw = match written {
        DataDir::Folder(path) => path.to_str().ok_or_else(|| format!("path {} is not UTF-8", path.display()))?,
        DataDir::ObjectStore(uri) => uri.as_str(),
    };
    let text = expand_vars(raw)?;
    let Some((scheme, rest)) = text.split_once("://") else {
        return Ok(DataDir::Folder(rooted(text, base)?));
    };
    if scheme != "s3" {
        return Err(format!(
            "{text:?}: knowledge bases live in a folder or in S3-compatible object storage (s3://bucket/prefix), not {scheme}://"
        ));
    }
    let bucket = rest.split('/').next().unwrap_or("");
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !bucket_ok {
        return Err(format!(
            "{text:?}: {bucket:?} is not a bucket name (3 to 63 lowercase letters, digits, '-' and '.'); write s3://bucket/prefix"
        ));
    }
    Ok(DataDir::ObjectStore(text.trim_end_matches('/').to_string()))
}

/// `state_dir` expanded, or its default beside a folder `data_dir` (already resolved).
pub(super) fn state_dir(data_dir: &DataDir, written: &Path, source: &Source) -> Result<PathBuf, ConfigError> {
    match (data_dir, written.as_os_str().is_empty()) {
        (_, false) => source.expand(written, "state_dir"),
        (DataDir::Folder(dir), true) => Ok(dir.clone()),
        (DataDir::ObjectStore(_), true) => source.expand(&default_object_store_state_dir(), "state_dir"),
    }
}

impl Config {
    /// `storage` goes with an object-store `data_dir`, and its endpoint is a URL it may use.
    pub(super) fn check_storage(&self) -> Result<(), ConfigError> {
        let Some(storage) = &self.storage else { return Ok(()) };
        if let DataDir::Folder(dir) = &self.data_dir {
            return Err(self.error(
                "storage",
                format!("is for knowledge bases in object storage (data_dir: s3://bucket/prefix); data_dir is the folder {}", dir.display()),
            ));
        }
        if let Some(endpoint) = &storage.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(self.error(
                    "storage.endpoint",
                    format!("{endpoint:?} is not a URL: write e.g. https://minio.example.org:9000"),
                ));
            }
            if endpoint.starts_with("http://") && !storage.allow_http {
                return Err(self.error(
                    "storage.endpoint",
                    format!("{endpoint} is unencrypted http: set `allow_http: true` if it is on this machine or a trusted network"),
                ));
            }
        }
        if storage.region.as_deref().is_some_and(str::is_empty) {
            return Err(
                self.error("storage.region", "is empty: name the bucket's region (e.g. eu-west-1) or leave it out")
            );
        }
        Ok(())
    }

    /// LanceDB storage options for an object-store `data_dir`: only what the config sets, so
    /// the standard `AWS_*` variables fill in the rest.
    pub fn storage_options(&self) -> BTreeMap<String, String> {
        let mut options = BTreeMap::new();
        let Some(storage) = &self.storage else { return options };
        if let Some(endpoint) = &storage.endpoint {
            options.insert("aws_endpoint".to_string(), endpoint.clone());
        }
        if let Some(region) = &storage.region {
            options.insert("aws_region".to_string(), region.clone());
        }
        if storage.allow_http {
            options.insert("allow_http".to_string(), "true".to_string());
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::super::testing::OK;
    use super::super::Config;
    use super::DataDir;

    #[test]
    fn a_local_data_dir_keeps_conversations_beside_the_knowledge_bases() {
        let cfg = Config::parse(Path::new("/etc/lore/lore.yaml"), &format!("data_dir: data\n{OK}")).unwrap();
        assert_eq!(cfg.data_dir, DataDir::Folder(PathBuf::from("/etc/lore/data")));
        assert_eq!(cfg.conversations_dir(), PathBuf::from("/etc/lore/data/conversations"));
        let own = format!("data_dir: data\nstate_dir: /var/lib/lore\n{OK}");
        let cfg = Config::parse(Path::new("/etc/lore/lore.yaml"), &own).unwrap();
        assert_eq!(cfg.conversations_dir(), PathBuf::from("/var/lib/lore/conversations"));
    }

    #[test]
    fn an_s3_data_dir_takes_storage_options_and_keeps_state_locally() {
        std::env::set_var("LORE_TEST_BUCKET", "team-kb");
        let text = format!(
            "data_dir: s3://${{LORE_TEST_BUCKET}}/docs/\nstate_dir: /state\nstorage:\n  endpoint: http://127.0.0.1:9000\n  region: eu-west-1\n  allow_http: true\n{OK}"
        );
        let cfg = Config::parse(Path::new("/etc/lore/lore.yaml"), &text).unwrap();
        assert_eq!(cfg.data_dir, DataDir::ObjectStore("s3://team-kb/docs".into()));
        assert_eq!(cfg.data_dir.folder(), None);
        assert_eq!(cfg.conversations_dir(), PathBuf::from("/state/conversations"));
        let options = cfg.storage_options();
        let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            options,
            [("allow_http", "true"), ("aws_endpoint", "http://127.0.0.1:9000"), ("aws_region", "eu-west-1")]
        );
        // Without state_dir, conversations go to the user's state folder, not the bucket.
        let cfg = Config::parse(Path::new("/etc/lore/lore.yaml"), &format!("data_dir: s3://team-kb\n{OK}")).unwrap();
        assert!(cfg.conversations_dir().ends_with("lore/conversations"), "{}", cfg.conversations_dir().display());
        assert!(cfg.conversations_dir().is_absolute());
        assert!(cfg.storage_options().is_empty(), "AWS_* variables decide what the config leaves out");
    }

    #[test]
    fn bad_object_storage_settings_name_the_key_and_line() {
        let parse = |head: &str| Config::parse(Path::new("lore.yaml"), &format!("{head}{OK}")).unwrap_err();
        let e = parse("data_dir: gs://bucket/kb\n");
        assert_eq!((e.key.as_str(), e.line), ("data_dir", Some(1)), "{e}");
        assert!(e.message.contains("not gs://"), "{e}");
        let e = parse("data_dir: s3://Bad_Bucket/kb\n");
        assert!(e.message.contains("\"Bad_Bucket\" is not a bucket name"), "{e}");
        let e = parse("data_dir: s3:///kb\n");
        assert_eq!(e.key, "data_dir", "{e}");
        let e = parse("data_dir: /srv/kb\nstorage:\n  region: eu-west-1\n");
        assert_eq!((e.key.as_str(), e.line), ("storage", Some(2)), "{e}");
        assert!(e.message.contains("data_dir is the folder /srv/kb"), "{e}");
        let e = parse("data_dir: s3://kb-bucket\nstorage:\n  endpoint: http://minio:9000\n");
        assert_eq!((e.key.as_str(), e.line), ("storage.endpoint", Some(3)), "{e}");
        assert!(e.message.contains("allow_http: true"), "{e}");
        let e = parse("data_dir: s3://kb-bucket\nstorage:\n  endpoint: minio:9000\n  allow_http: true\n");
        assert!(e.message.contains("is not a URL"), "{e}");
        let e = parse("data_dir: s3://kb-bucket\nstorage:\n  access_key: AKIA\n");
        assert!(e.message.contains("unknown field `access_key`"), "{e}");
    }
}
