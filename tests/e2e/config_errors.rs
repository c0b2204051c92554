//! A bad config is reported with file, line and key, before any model loads.

use std::path::Path;

use lore::config::Config;
use lore_tests::models::model;

fn write_config(dir: &Path, body: &str) -> std::path::PathBuf {
    let file = dir.join("lore.yaml");
    std::fs::write(&file, body).unwrap();
    file
}

/// A good config; parsing it needs no model files, only `validate_files` looks at them.
fn good(generator: &Path) -> String {
    format!(
        "models:\n  generator:\n    path: {}\n  embedder:\n    path: /models/embedder.gguf\nknowledge_bases:\n  docs: {{}}\nbots:\n  helper:\n    knowledge_base: docs\n",
        generator.display(),
    )
}

/// Where the parse-only tests say the generator is (no file there).
fn nowhere() -> &'static Path {
    Path::new("/models/generator.gguf")
}

#[test]
fn the_shipped_default_config_parses() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/lore.yaml");
    let cfg = Config::load(&file).unwrap();
    assert!(cfg.bots.contains_key("guide"));
    assert!(cfg.knowledge_bases["sample"].sources[0].ends_with("config/sample"));
    // The shipped calibration is there and fits the default models' signals.
    let calibrations = lore::app::calibrations(&cfg).unwrap();
    assert_eq!(calibrations.len(), 1, "{calibrations:?}");
    assert_eq!(calibrations[0].0, "retrieval.abstain.calibration");
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let body = good(nowhere()).replace("knowledge_bases:", "retrieval:\n  top_kk: 3\nknowledge_bases:");
    let file = write_config(dir.path(), &body);
    let err = Config::load(&file).unwrap_err();
    let shown = err.to_string();
    assert_eq!(err.line, Some(7), "{shown}");
    assert!(shown.starts_with(&format!("{}:7: retrieval", file.display())), "{shown}");
    assert!(shown.contains("unknown field `top_kk`"), "{shown}");
}

#[test]
fn unknown_knowledge_base_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let body = good(nowhere()).replace("knowledge_base: docs", "knowledge_base: manuals");
    let err = Config::load(&write_config(dir.path(), &body)).unwrap_err();
    assert_eq!((err.key.as_str(), err.line), ("bots.helper.knowledge_base", Some(10)));
    assert!(err.message.contains("unknown knowledge base \"manuals\" (known: docs)"), "{err}");
}

#[test]
fn missing_model_file_is_reported_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-model.gguf");
    let cfg = Config::load(&write_config(dir.path(), &good(&missing))).unwrap();
    let err = cfg.validate_files().unwrap_err();
    assert_eq!((err.key.as_str(), err.line), ("models.generator.path", Some(3)));
    assert!(err.message.contains("no-such-model.gguf does not exist"), "{err}");
}

#[test]
fn a_gptj_generator_is_refused_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::load(&write_config(dir.path(), &good(&model("gptj-tiny.F16.gguf")))).unwrap();
    let err = cfg.validate_files().unwrap_err().to_string();
    assert!(err.contains("GPT-J") && err.contains("GPT-NeoX"), "{err}");
}

#[test]
fn a_non_gguf_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("model.bin");
    std::fs::write(&fake, b"PK\x03\x04 not a model").unwrap();
    let cfg = Config::load(&write_config(dir.path(), &good(&fake))).unwrap();
    let err = cfg.validate_files().unwrap_err().to_string();
    assert!(err.contains("not a GGUF model file"), "{err}");
}

#[test]
fn the_bot_example_config_parses() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/bots.example.yaml");
    let cfg = Config::load(&file).unwrap();
    assert!(matches!(cfg.bots["discord-helper"].adapter, lore::config::AdapterConfig::Discord(_)));
    assert!(matches!(cfg.bots["telegram-helper"].adapter, lore::config::AdapterConfig::Telegram(_)));
    assert_eq!(cfg.bots["discord-helper"].channels["234567890123456789"].knowledge_base.as_deref(), Some("releases"));
}

#[test]
fn a_cross_encoder_without_a_reranking_model_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let body = good(nowhere()).replace(
        "    knowledge_base: docs\n",
        "    knowledge_base: docs\n    retrieval:\n      rerankers:\n        - type: cross-encoder\n",
    );
    let err = Config::load(&write_config(dir.path(), &body)).unwrap_err();
    assert_eq!(err.key, "bots.helper.retrieval.rerankers.0", "{err}");
    assert!(err.line.is_some(), "{err}");
    assert!(err.message.contains("models.reranker.path"), "{err}");
}
