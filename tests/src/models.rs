//! Where the tests find models and data, and configs that use them.

use std::path::{Path, PathBuf};

use lore::config::Config;

/// Folder with the models `scripts/setup --test-models` writes.
pub fn models_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("LORE_MODELS") {
        return PathBuf::from(dir);
    }
    cache_dir().join("models")
}

/// A model's name as Lore's HTTP API lists it: its file name without `.gguf`.
pub fn model_name(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

/// Where scripts/setup keeps models, the Python venv and build output.
pub fn cache_dir() -> PathBuf {
    std::env::var("LORE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/lore"))
}

/// The Python of the venv scripts/setup made (with OpenAI's client, for the API tests).
pub fn venv_python() -> PathBuf {
    cache_dir().join("venv/bin/python")
}

/// A model file, or a panic that says how to get it.
pub fn model(name: &str) -> PathBuf {
    let path = models_dir().join(name);
    assert!(path.is_file(), "{} is missing: run scripts/setup --test-models", path.display());
    path
}

pub fn generator_path() -> PathBuf {
    model("SmolLM2-135M-Instruct.Q4_1.gguf")
}

pub fn embedder_path() -> PathBuf {
    model("all-MiniLM-L6-v2.F16.gguf")
}

/// The embedder's `tokenizer.json`, as published with the model.
pub fn embedder_tokenizer_path() -> PathBuf {
    model("all-MiniLM-L6-v2.tokenizer.json")
}

/// A tiny random-weight BERT cross-encoder (rank pooling) from `scripts/make_gguf.py`.
pub fn reranker_path() -> PathBuf {
    model("reranker-tiny.F32.gguf")
}

/// The evaluation data beside the repository (`../shared/data`).
pub fn shared_data(rel: &str) -> PathBuf {
    let root = std::env::var("LORE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let path = root.join("data").join(rel);
    assert!(path.exists(), "{} is missing (the shared data folder sits beside the repository)", path.display());
    path
}

/// A SQuAD 2.0 article's paragraphs, as one text file with a blank line between paragraphs
/// (as a user would have it). Returns the paragraphs too.
pub fn squad_article_text(file: &str, dir: &Path) -> (PathBuf, Vec<String>) {
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(shared_data(file)).unwrap()).unwrap();
    let article = &json["data"][0];
    let paragraphs: Vec<String> = article["paragraphs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["context"].as_str().unwrap().trim().to_string())
        .collect();
    let title = article["title"].as_str().unwrap().to_lowercase();
    let path = dir.join(format!("{title}.txt"));
    std::fs::write(&path, paragraphs.join("\n\n") + "\n").unwrap();
    (path, paragraphs)
}

/// A config on the default models with its data directory in `dir`; `extra` is appended
/// (more knowledge bases and bots).
pub fn config(dir: &Path, extra: &str) -> Config {
    config_with_models(dir, "", extra)
}

/// Like [`config`], with `models_extra` added under `models:` (indented two spaces).
pub fn config_with_models(dir: &Path, models_extra: &str, extra: &str) -> Config {
    write_config(dir, &default_generator(), models_extra, extra)
}

/// Like [`config`], with `models` (the `generator:` and `embedder:` sections, indented two
/// spaces) in place of the default models.
pub fn config_with_models_section(dir: &Path, models: &str, extra: &str) -> Config {
    write_config_text(dir, &format!("data_dir: {}\nmodels:\n{models}{extra}", dir.join("data").display()))
}

/// Like [`config`] (written to `dir`), with `data_dir` as given: another folder, or an
/// `s3://` URI (`extra` then adds the `storage:` section).
pub fn config_with_data_dir(dir: &Path, data_dir: &str, extra: &str) -> Config {
    write_file(dir, data_dir, &default_generator(), "", extra)
}

/// `models.generator` for the default generator (indented four spaces).
fn default_generator() -> String {
    format!("    path: {}\n    context_tokens: 2048\n    max_answer_tokens: 96\n", generator_path().display())
}

fn write_config(dir: &Path, generator: &str, models_extra: &str, extra: &str) -> Config {
    write_file(dir, &dir.join("data").display().to_string(), generator, models_extra, extra)
}

fn write_file(dir: &Path, data: &str, generator: &str, models_extra: &str, extra: &str) -> Config {
    let text = format!(
        "data_dir: {data}\nmodels:\n  generator:\n{generator}  embedder:\n    path: {emb}\n{models_extra}{extra}",
        emb = embedder_path().display(),
    );
    write_config_text(dir, &text)
}

fn write_config_text(dir: &Path, text: &str) -> Config {
    // Every test with a config may ingest, and ingest needs `lore` to parse documents.
    crate::init();
    let file = dir.join("lore.yaml");
    std::fs::write(&file, text).unwrap();
    Config::load(&file).unwrap_or_else(|e| panic!("{e}\n{text}"))
}
