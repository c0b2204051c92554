//! A text-to-text (T5) generator through llama.cpp's encoder-decoder path, on the tiny
//! random-weight T5 that `scripts/make_gguf.py t5` writes: the prompt is encoded, the
//! answer streams from the decoder, one conversation at a time, and `lore check` names
//! the family.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lore_core::{ChatModel, Event, GenerateRequest, PromptText, Sampling};
use lore_engine::{Generator, GeneratorConfig};
use lore_tests::models::{config_with_models_section, embedder_path, model};

fn t5() -> GeneratorConfig {
    // Batches smaller than a prompt: the encoder still reads each prompt whole.
    GeneratorConfig {
        context_tokens: 256,
        parallel: 4,
        batch_tokens: 8,
        ..GeneratorConfig::new(model("t5-tiny.F32.gguf"))
    }
}

fn request(prompt: &str) -> GenerateRequest {
    GenerateRequest {
        prompt: PromptText::template(prompt),
        max_tokens: 12,
        stop: vec![],
        ignore_eos: true,
        sampling: Sampling::greedy(),
        lora: None,
    }
}

/// The answer's text and how many pieces it streamed in.
async fn answer(g: &Generator, prompt: &str) -> (String, usize) {
    let mut generation = g.generate(request(prompt)).unwrap();
    let (mut text, mut pieces) = (String::new(), 0);
    while let Some(e) = tokio::time::timeout(Duration::from_secs(60), generation.events.recv()).await.unwrap() {
        match e {
            Event::Text(t) => {
                text.push_str(&t);
                pieces += 1;
            }
            Event::Done(f) => {
                assert_eq!(f.generated_tokens, 12);
                return (text, pieces);
            }
            Event::Failed(why) => panic!("{why}"),
            Event::Queued { .. } => {}
        }
    }
    panic!("no end")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_t5_model_encodes_the_prompt_and_streams_its_answer_one_conversation_at_a_time() {
    let g = Generator::load(&t5()).unwrap();
    assert_eq!(g.architecture(), "t5");
    assert!(g.is_encoder_decoder());
    assert_eq!(g.parallel(), 1, "one encoder output per context");
    assert!(!g.has_chat_template());
    let tokens = g.tokens(&PromptText::template("question: where do bees dance?"));
    assert_eq!(tokens.last(), Some(&1), "the encoder reads the prompt and then </s>");

    let (bees, pieces) = answer(&g, "question: where do bees dance? context: on the comb").await;
    assert!(!bees.is_empty() && pieces > 1, "streamed in pieces: {bees:?}");
    let (other, _) = answer(&g, "translate English to German: the queen is in the hive").await;
    assert_ne!(bees, other, "the answer depends on the encoded prompt");
    assert_eq!(answer(&g, "question: where do bees dance? context: on the comb").await.0, bees);

    // Asked at once: one at a time, each as alone.
    let (a, b) = tokio::join!(
        answer(&g, "question: where do bees dance? context: on the comb"),
        answer(&g, "translate English to German: the queen is in the hive")
    );
    assert_eq!((a.0, b.0), (bees, other));

    let scoring = g.score("context", "continuation").await.unwrap_err().to_string();
    assert!(scoring.contains("text-to-text") && scoring.contains("cross-encoder"), "{scoring}");
    assert!(g.count_tokens("where do bees dance").await > 0);
}

#[test]
fn a_bot_on_a_t5_model_answers_and_lore_check_names_the_family() {
    let dir = tempfile::tempdir().unwrap();
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/sample");
    let models = format!(
        "  generator:\n    path: {}\n    context_tokens: 256\n    max_answer_tokens: 64\n  embedder:\n    path: {}\n",
        model("t5-tiny.F32.gguf").display(),
        embedder_path().display()
    );
    let extra = format!(
        "retrieval:\n  rerankers: []\n  min_score: 0\nknowledge_bases:\n  bees:\n    sources: [{}]\n",
        docs.display()
    );
    let config = config_with_models_section(dir.path(), &models, &extra);
    let lore = |args: &[&str]| {
        let out = Command::new(lore_tests::lore_binary())
            .args(["--config", &config.file.display().to_string()])
            .args(args)
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (_, checked) = lore(&["check"]);
    assert!(checked.contains(": t5, text-to-text (encoder-decoder"), "{checked}");
    assert!(lore(&["ingest", "--kb", "bees"]).0);
    let (ok, answer) = lore(&["ask", "--kb", "bees", "How do bees tell each other where flowers are?"]);
    assert!(ok && !answer.trim().is_empty(), "the random model answers something: {answer}");
}
