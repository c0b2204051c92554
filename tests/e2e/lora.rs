//! Per-bot LoRA adapters on the tiny random GPT-NeoX and random adapters written for it
//! by `scripts/make_gguf.py`: an adapter changes its own generations only, sequences with
//! different adapters are decoded in turns and each answers as it would alone, and an
//! adapter that does not fit the model is refused in words.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lore::app::{App, Load};
use lore::config::Config;
use lore::ingest::{ingest, Progress::Quiet, Settings};
use lore::question::pipeline::respond;
use lore::question::router::bot_place;
use lore_core::{ChatModel, Event, GenerateRequest, LoraAdapter, PromptText, Sampling};
use lore_engine::{Generator, GeneratorConfig};
use lore_tests::capture::Capture;
use lore_tests::models::{config_with_models_section, embedder_path, generator_path, model};

fn tiny() -> GeneratorConfig {
    GeneratorConfig { context_tokens: 256, parallel: 3, ..GeneratorConfig::new(model("gptneox-tiny.F16.gguf")) }
}

fn adapters() -> [PathBuf; 2] {
    [model("gptneox-tiny-lora1.F32.gguf"), model("gptneox-tiny-lora2.F32.gguf")]
}

fn request(lora: Option<&Path>) -> GenerateRequest {
    GenerateRequest {
        prompt: PromptText::template("Question: where do bees dance?\nAnswer:"),
        max_tokens: 32,
        stop: vec![],
        ignore_eos: true,
        sampling: Sampling::greedy(),
        lora: lora.map(|path| LoraAdapter { path: path.to_path_buf(), scale: 1.0 }),
    }
}

async fn text(g: &Generator, lora: Option<&Path>) -> String {
    answer(g, lora).await.0
}

/// The text, and how many prompt tokens an earlier request left in the cache for it.
async fn answer(g: &Generator, lora: Option<&Path>) -> (String, usize) {
    let mut generation = g.generate(request(lora)).unwrap();
    let mut text = String::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(60), generation.events.recv()).await.unwrap() {
        match e {
            Event::Text(t) => text.push_str(&t),
            Event::Done(f) => return (text, f.reused_tokens),
            Event::Failed(why) => panic!("{why}"),
            Event::Queued { .. } => {}
        }
    }
    panic!("no end")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_adapter_changes_its_own_generations_only_and_bots_with_others_run_concurrently() {
    let [one, two] = adapters();
    let g = Generator::load_with_adapters(&tiny(), &[one.clone(), two.clone()]).unwrap();
    let base = text(&g, None).await;
    let (with_one, reused) = answer(&g, Some(&one)).await;
    assert_eq!(reused, 0, "a prompt cached under another adapter set is not reused");
    assert!(answer(&g, Some(&one)).await.1 > 0, "under the same one it is");
    let with_two = text(&g, Some(&two)).await;
    assert!(!base.is_empty() && !with_one.is_empty() && !with_two.is_empty());
    assert_ne!(base, with_one, "the adapter changes what is generated");
    assert_ne!(with_one, with_two, "each adapter its own");
    assert_eq!(text(&g, None).await, base, "after an adapter, the base model is back");
    let plain = Generator::load(&tiny()).unwrap();
    assert_eq!(text(&plain, None).await, base, "loading adapters changes nothing without them");

    // All three at once: decoded in turns by adapter set, each the same as alone.
    let (a, b, c) = tokio::join!(text(&g, None), text(&g, Some(&one)), text(&g, Some(&two)));
    assert_eq!((a, b, c), (base, with_one, with_two));

    let unknown = g.generate(request(Some(Path::new("/nowhere/other.gguf")))).err().unwrap().to_string();
    assert!(unknown.contains("/nowhere/other.gguf") && unknown.contains("not loaded"), "{unknown}");
}

#[tokio::test(flavor = "multi_thread")]
async fn adapters_that_do_not_fit_the_model_are_refused_in_words() {
    let wide = model("gptneox-wide-lora.F32.gguf");
    let error = Generator::load_with_adapters(&tiny(), std::slice::from_ref(&wide)).err().unwrap().to_string();
    assert!(error.contains(&wide.display().to_string()) && error.contains("do not match"), "{error}");
    let bert = model("bert-lora.F32.gguf");
    let error = Generator::load_with_adapters(&tiny(), &[bert]).err().unwrap().to_string();
    assert!(error.contains("made for a `bert` model") && error.contains("`gptneox`"), "{error}");
    let error = Generator::load_with_adapters(&tiny(), &[generator_path()]).err().unwrap().to_string();
    assert!(error.contains("is not a LoRA adapter"), "{error}");
}

fn bots_config(dir: &Path, second_adapter: &Path) -> Config {
    let [one, _] = adapters();
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/sample");
    let models = format!(
        "  generator:\n    path: {}\n    context_tokens: 256\n    parallel: 3\n    max_answer_tokens: 24\n  embedder:\n    path: {}\n",
        model("gptneox-tiny.F16.gguf").display(),
        embedder_path().display()
    );
    let bots = format!(
        "retrieval:\n  min_score: 0\n  rerankers: []\n  passages: 1\nknowledge_bases:\n  bees:\n    sources: [{docs}]\nbots:\n  plain:\n    knowledge_base: bees\n  first:\n    knowledge_base: bees\n    adapters: [{{path: {one}}}]\n  second:\n    knowledge_base: bees\n    adapters:\n      - path: {two}\n        scale: 0.5\n",
        docs = docs.display(),
        one = one.display(),
        two = second_adapter.display(),
    );
    config_with_models_section(dir, &models, &bots)
}

#[tokio::test(flavor = "multi_thread")]
async fn three_bots_with_different_adapters_answer_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let [_, two] = adapters();
    let app = App::load(bots_config(dir.path(), &two), Load::All).await.unwrap();
    let kb = app.kb_for_ingest("bees").await.unwrap();
    let sources = app.config.knowledge_bases["bees"].sources.clone();
    ingest(&kb, app.embedder.as_ref(), &sources, &Settings::for_kb(&app.config, "bees"), Quiet).await.unwrap();
    let answer = |bot: &'static str| {
        let app = &app;
        async move {
            let chain = app.chain(bot_place(&app.config, bot).unwrap()).unwrap();
            let answer = app.pipeline().prepare(&chain, "How do bees tell where flowers are?", &[]).await.unwrap();
            respond(answer, &mut Capture::default()).await.unwrap().text
        }
    };
    let alone: Vec<String> = vec![answer("plain").await, answer("first").await, answer("second").await];
    let (plain, first, second) = tokio::join!(answer("plain"), answer("first"), answer("second"));
    assert_eq!(vec![plain, first, second], alone, "each bot answers as it does alone");
    assert_ne!(alone[0], alone[1]);
    assert_ne!(alone[1], alone[2]);
}

#[test]
fn lore_check_reports_each_adapter_and_names_one_that_does_not_fit_by_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let [_, two] = adapters();
    let check = |config: &Config| {
        Command::new(lore_tests::lore_binary())
            .args(["--config", &config.file.display().to_string(), "check"])
            .output()
            .unwrap()
    };
    let good = check(&bots_config(dir.path(), &two));
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert!(stdout.contains(&format!("bot second: LoRA adapter {} at scale 0.5: fits", two.display())), "{stdout}");

    let bad = check(&bots_config(dir.path(), &model("bert-lora.F32.gguf")));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "{stderr}");
    assert!(stderr.contains("bots.second.adapters.0.path") && stderr.contains("`bert`"), "{stderr}");
    let wide = check(&bots_config(dir.path(), &model("gptneox-wide-lora.F32.gguf")));
    let stderr = String::from_utf8_lossy(&wide.stderr);
    assert!(!wide.status.success() && stderr.contains("do not match"), "{stderr}");
}
