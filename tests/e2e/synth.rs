//! `lore synth` on the real default generator: question/answer pairs from a knowledge
//! base in the chat-messages JSONL format, split by chunk, resumed after a stop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use lore::app::{App, Load};
use lore::ingest::{ingest, Progress::Quiet, Settings};
use lore::tools::synth::{run, SynthArgs};
use lore_tests::models::config;
use serde_json::Value;

fn lines(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn pairs_are_written_as_chat_messages_split_by_chunk_and_a_stopped_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/sample/honeybees.md");
    let app = App::load(config(dir.path(), ""), Load::All).await.unwrap();
    let kb = app.kb_for_ingest("bees").await.unwrap();
    ingest(&kb, app.embedder.as_ref(), &[sample], &Settings::new(&app.config.chunking), Quiet).await.unwrap();
    let chunks: BTreeMap<String, String> = kb.all_chunks().await.unwrap().into_iter().map(|c| (c.id, c.text)).collect();
    let out = dir.path().join("pairs/bees.jsonl");
    let args = SynthArgs { kb: "bees".into(), out: out.clone(), paraphrases: 1, split: Some(0.5), limit: Some(6) };

    let first = run(&app, &args, false).await.unwrap();
    let files: [PathBuf; 2] =
        [dir.path().join("pairs/bees.train.jsonl"), dir.path().join("pairs/bees.validation.jsonl")];
    let written: Vec<Value> = files.iter().flat_map(|f| lines(f)).collect();
    assert!(first.pairs >= 2, "the default model writes some usable pairs: {first}");
    assert_eq!(written.len(), first.pairs, "{first}");
    assert_eq!(first.chunks, 6);
    for pair in &written {
        let roles: Vec<&str> =
            pair["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["system", "user", "assistant"], "{pair}");
        assert_eq!(pair["messages"][1]["content"], pair["question"]);
        assert_eq!(pair["messages"][2]["content"], pair["answer"]);
        assert!(pair["question"].as_str().unwrap().ends_with('?'), "{pair}");
        let id = pair["chunk_id"].as_str().unwrap();
        assert_eq!(chunks.get(id).map(|t| t.trim()), pair["passage"].as_str(), "the passage is its chunk's text");
        assert!(pair["source"].as_str().unwrap().ends_with("honeybees.md"), "{pair}");
    }
    // Every chunk's pairs in one file: no chunk on both sides of the split.
    let ids = |f: &Path| lines(f).iter().map(|p| p["chunk_id"].as_str().unwrap().to_string()).collect::<BTreeSet<_>>();
    assert!(ids(&files[0]).is_disjoint(&ids(&files[1])));
    // A paraphrase keeps its original's answer.
    for p in written.iter().filter(|p| p["paraphrase"] == true) {
        let original = written.iter().find(|o| o["paraphrase"] == false && o["chunk_id"] == p["chunk_id"]).unwrap();
        assert_eq!(original["answer"], p["answer"]);
        assert_ne!(original["question"], p["question"]);
    }

    // Stopped in the middle of a line: the next run removes the torn line and goes on
    // after the chunks that were finished.
    let finished = ids(&files[0]).len() + ids(&files[1]).len();
    let mut f = std::fs::OpenOptions::new().append(true).open(&files[0]).unwrap();
    std::io::Write::write_all(&mut f, br#"{"messages":[{"role":"sys"#).unwrap();
    let again = run(&app, &args, false).await.unwrap();
    assert_eq!(again.already_done, finished, "{again}");
    assert_eq!(again.chunks - again.already_done, first.no_pair, "only the chunks without a pair are tried again");
    let all: Vec<Value> = files.iter().flat_map(|f| lines(f)).collect();
    assert_eq!(all.len(), first.pairs + again.pairs);

    let err = run(&app, &SynthArgs { kb: "empty".into(), ..args }, false).await.unwrap_err().to_string();
    assert!(err.contains("has no chunks") && err.contains("lore ingest --kb empty"), "{err}");
}
