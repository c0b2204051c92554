//! `lore bench`: lore's own speed, measured the way llama.cpp's tools measure theirs, next to
//! a reference program built from the same llama.cpp libraries (scripts/bench/reference.cpp)
//! when one is given. Prints a table, or one JSON object with `--json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use lore_plugins::{Chunk, Embedder, KbStore, RetrieverConfig};
use serde_json::{json, Value};

use crate::config::{EmbedderConfig, GeneratorConfig, Retrieval, Sampling};
use crate::engine::{Event, GenerateRequest, Generator, LlamaEmbedder};
use crate::pipeline::{Pipeline, Question};
use crate::prompt::Template;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Generator GGUF [default: the config's].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Embedder GGUF [default: the config's].
    #[arg(long)]
    pub embedder: Option<PathBuf>,
    /// Reference program (scripts/bench/reference) to compare with, run on the same files.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Prompt tokens for the prompt-processing test.
    #[arg(long, default_value_t = 512)]
    pub n_prompt: usize,
    /// Generated tokens for the decode test.
    #[arg(long, default_value_t = 128)]
    pub n_gen: usize,
    /// Concurrent conversations for the batched test (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 4, 8])]
    pub parallel: Vec<usize>,
    /// Prompt and answer tokens per conversation in the batched test.
    #[arg(long, default_value_t = 128)]
    pub batched_tokens: usize,
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Threads [default: one per core].
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub gpu_layers: u32,
    /// Chunks in the synthetic knowledge base of the time-to-first-token test.
    #[arg(long, default_value_t = 10_000)]
    pub kb_chunks: usize,
    /// Texts embedded in the ingest test.
    #[arg(long, default_value_t = 256)]
    pub embed_texts: usize,
    /// Skip the thread sweep.
    #[arg(long)]
    pub no_thread_sweep: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON object to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

/// The retrieval and time-to-first-token test, kept apart so that a bench binary without
/// the knowledge-base store (lore-bench, shipped to GPU machines) stays small.
pub type RetrievalTest =
    for<'a> fn(&'a Generator, &'a LlamaEmbedder, usize) -> futures::future::BoxFuture<'a, anyhow::Result<Value>>;

/// Every measurement, with retrieval.
pub async fn run(args: BenchArgs, gen_path: PathBuf, emb_path: PathBuf) -> anyhow::Result<()> {
    run_with(args, gen_path, emb_path, Some(|g, e, n| Box::pin(ttft_test(g, e, n)))).await
}

/// Every measurement; time to first token only when `retrieval` is given.
pub async fn run_with(
    args: BenchArgs,
    gen_path: PathBuf,
    emb_path: PathBuf,
    retrieval: Option<RetrievalTest>,
) -> anyhow::Result<()> {
    let gen_path = args.model.clone().unwrap_or(gen_path);
    let emb_path = args.embedder.clone().unwrap_or(emb_path);
    let threads = crate::engine::thread_count(args.threads) as usize;
    let max_parallel = args.parallel.iter().copied().max().unwrap_or(1);
    let per_seq = (args.n_prompt + args.n_gen).max(2 * args.batched_tokens) + 64;
    let gen_cfg = |parallel: usize, threads: usize| -> GeneratorConfig {
        serde_yaml::from_str(&format!(
            "path: {}\ngpu_layers: {}\ncontext_tokens: {per_seq}\nparallel: {parallel}\nthreads: {threads}\nmax_answer_tokens: {}\nmax_queue: 256",
            gen_path.display(),
            args.gpu_layers,
            (per_seq / 2).max(1)
        ))
        .expect("valid generator config")
    };
    let progress = |what: &str| {
        if !args.json {
            eprintln!("bench: {what}");
        }
    };
    let mut out = serde_json::Map::new();
    out.insert("model".into(), json!(gen_path.display().to_string()));
    out.insert("embedder".into(), json!(emb_path.display().to_string()));
    out.insert("threads".into(), json!(threads));
    out.insert("gpu_layers".into(), json!(args.gpu_layers));
    out.insert("devices".into(), json!(crate::engine::devices()));

    // The reference runs before and after lore and its figures are averaged: on a small
    // shared machine speed drifts by minutes, and a one-sided reference would blame lore.
    let texts = sample_texts(args.embed_texts);
    let reference_before = match &args.reference {
        Some(reference) => {
            progress("reference (llama.cpp C API), first run");
            Some(run_reference(reference, &args, &gen_path, &emb_path, threads, &texts)?)
        }
        None => None,
    };

    progress("loading");
    let generator = Generator::load(&gen_cfg(max_parallel, threads))?;

    progress("prompt processing and decode");
    let pp = pp_test(&generator, args.n_prompt, args.reps).await?;
    let tg = tg_test(&generator, args.n_gen, args.reps).await?;
    out.insert("pp_tps".into(), stats_json(&pp));
    out.insert("tg_tps".into(), stats_json(&tg));

    progress("concurrent conversations");
    let mut batched = Vec::new();
    for &np in &args.parallel {
        let b = batched_test(&generator, np, args.batched_tokens, args.reps).await?;
        batched.push(b);
    }
    let sequential = sequential_test(&generator, max_parallel, args.batched_tokens).await?;
    out.insert("batched".into(), json!(batched));
    out.insert("sequential".into(), sequential.clone());

    let embedder = LlamaEmbedder::load(&emb_config(&emb_path, threads, args.gpu_layers))?;
    if let Some(test) = retrieval {
        progress("retrieval and time to first token");
        out.insert("ttft".into(), test(&generator, &embedder, args.kb_chunks).await?);
    }

    progress("ingest embedding");
    let embed = embed_test(&embedder, &texts, args.reps).await?;
    out.insert("embed_texts_per_s".into(), stats_json(&embed));

    let rss = peak_rss_bytes();
    let model_bytes = std::fs::metadata(&gen_path).map(|m| m.len()).unwrap_or(0);
    let emb_bytes = std::fs::metadata(&emb_path).map(|m| m.len()).unwrap_or(0);
    out.insert(
        "memory".into(),
        json!({
            "peak_rss_bytes": rss,
            "model_bytes": model_bytes,
            "embedder_bytes": emb_bytes,
            "kv_cache_bytes": generator.kv_cache_bytes(),
            "ratio": rss as f64 / (model_bytes + emb_bytes + generator.kv_cache_bytes()) as f64,
        }),
    );
    drop(generator);

    // The sweep measures decoding alone: no other model's threads around.
    drop(embedder);
    if !args.no_thread_sweep && args.gpu_layers == 0 {
        progress("thread sweep");
        let mut sweep = Vec::new();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut counts: Vec<usize> = [1, cores / 2, cores, cores * 2, threads].into_iter().filter(|&n| n >= 1).collect();
        counts.sort();
        counts.dedup();
        for n in counts {
            let g = Generator::load(&gen_cfg(1, n))?;
            let t = tg_test(&g, args.n_gen.min(64), 1).await?;
            sweep.push(json!({"threads": n, "tg_tps": mean(&t)}));
        }
        let best = sweep.iter().map(|s| s["tg_tps"].as_f64().unwrap_or(0.0)).fold(0.0, f64::max);
        let configured = sweep
            .iter()
            .find(|s| s["threads"] == json!(threads))
            .and_then(|s| s["tg_tps"].as_f64())
            .unwrap_or(0.0);
        out.insert("threads_sweep".into(), json!({"results": sweep, "configured_vs_best": configured / best}));
    }

    if let (Some(reference), Some(before)) = (&args.reference, reference_before) {
        progress("reference (llama.cpp C API), second run");
        let after = run_reference(reference, &args, &gen_path, &emb_path, threads, &texts)?;
        let f = |v: &Value, a: &str, b: &str| v[a][b].as_f64().unwrap_or(f64::NAN);
        out.insert(
            "reference_drift".into(),
            json!({
                "pp": f(&after, "bench", "pp_tps_mean") / f(&before, "bench", "pp_tps_mean"),
                "tg": f(&after, "bench", "tg_tps_mean") / f(&before, "bench", "tg_tps_mean"),
            }),
        );
        out.insert("reference".into(), mean_json(&before, &after));
        out.insert("reference_runs".into(), json!([before, after]));
        out.insert("ratios".into(), ratios(&out));
    }

    let out = Value::Object(out);
    if let Some(file) = &args.json_out {
        std::fs::write(file, serde_json::to_vec_pretty(&out)?).with_context(|| format!("cannot write {}", file.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_table(&out);
    }
    Ok(())
}

fn emb_config(path: &Path, threads: usize, gpu_layers: u32) -> EmbedderConfig {
    serde_yaml::from_str(&format!("path: {}\nthreads: {threads}\ngpu_layers: {gpu_layers}", path.display())).expect("valid")
}

fn request(prompt: String, max_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        prompt,
        max_tokens,
        stop: vec![],
        ignore_eos: true,
        sampling: Sampling { temperature: 0.0, repeat_penalty: 1.0, ..Sampling::default() },
    }
}

/// Text that tokenises to about `n` tokens (" the" is one token in most vocabularies).
/// Every call's text starts differently, so no request finds its prompt already in the
/// engine's prefix cache: these tests measure decoding, as llama.cpp's tools do.
fn prompt_of(generator: &Generator, n: usize) -> (String, usize) {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let salt = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let text = format!("{salt}:{}", " the".repeat(n.saturating_sub(3).max(1)));
    let tokens = generator.count_tokens(&text);
    (text, tokens)
}

struct Timing {
    submitted: Instant,
    first: Option<Instant>,
    done: Instant,
    generated: usize,
}

/// One request, from an empty cache (as llama.cpp's tools measure: a fresh context per
/// test); the prompts of `prompt_of` share no prefix with each other either.
async fn timed(generator: &Generator, req: GenerateRequest) -> anyhow::Result<Timing> {
    generator.forget_cached_prompts();
    let mut g = generator.generate(req)?;
    let submitted = Instant::now();
    let mut first = None;
    loop {
        match g.events.recv().await {
            Some(Event::Text(_)) => {
                first.get_or_insert_with(Instant::now);
            }
            Some(Event::Queued { .. }) => {}
            Some(Event::Done(f)) => {
                return Ok(Timing { submitted, first, done: Instant::now(), generated: f.generated_tokens });
            }
            Some(Event::Failed(e)) => anyhow::bail!("generation failed: {e}"),
            None => anyhow::bail!("generator stopped"),
        }
    }
}

async fn pp_test(generator: &Generator, n_prompt: usize, reps: usize) -> anyhow::Result<Vec<f64>> {
    timed(generator, request(prompt_of(generator, n_prompt).0, 1)).await?; // warm-up
    let mut out = Vec::new();
    for _ in 0..reps {
        let (text, tokens) = prompt_of(generator, n_prompt);
        let t = timed(generator, request(text, 1)).await?;
        out.push(tokens as f64 / (t.done - t.submitted).as_secs_f64());
    }
    Ok(out)
}

async fn tg_test(generator: &Generator, n_gen: usize, reps: usize) -> anyhow::Result<Vec<f64>> {
    timed(generator, request(prompt_of(generator, 1).0, 4)).await?; // warm-up
    let mut out = Vec::new();
    for _ in 0..reps {
        let t = timed(generator, request(prompt_of(generator, 1).0, n_gen)).await?;
        let first = t.first.unwrap_or(t.submitted);
        out.push((t.generated.saturating_sub(1)) as f64 / (t.done - first).as_secs_f64());
    }
    Ok(out)
}

async fn batched_test(generator: &Generator, np: usize, n: usize, reps: usize) -> anyhow::Result<Value> {
    let tokens = prompt_of(generator, n).1;
    let mut tg = Vec::new();
    let mut total = Vec::new();
    for rep in 0..=reps {
        let runs =
            futures::future::try_join_all((0..np).map(|_| timed(generator, request(prompt_of(generator, n).0, n)))).await?;
        if rep == 0 {
            continue; // warm-up
        }
        let start = runs.iter().map(|t| t.submitted).min().expect("np >= 1");
        let all_first = runs.iter().filter_map(|t| t.first).max().unwrap_or(start);
        let end = runs.iter().map(|t| t.done).max().expect("np >= 1");
        let generated: usize = runs.iter().map(|t| t.generated).sum();
        // Decode phase: once every conversation is generating (as llama-batched-bench's S_TG).
        tg.push((generated - np) as f64 / (end - all_first).as_secs_f64().max(1e-9));
        total.push((np * tokens + generated) as f64 / (end - start).as_secs_f64());
    }
    Ok(json!({"np": np, "tg_tps": stats_json(&tg), "total_tps": stats_json(&total)}))
}

/// The same conversations answered one after another (how a one-at-a-time bot would).
async fn sequential_test(generator: &Generator, np: usize, n: usize) -> anyhow::Result<Value> {
    let tokens = prompt_of(generator, n).1;
    let start = Instant::now();
    let mut generated = 0;
    for _ in 0..np {
        generated += timed(generator, request(prompt_of(generator, n).0, n)).await?.generated;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(json!({"np": np, "tg_tps": generated as f64 / secs, "total_tps": (np * tokens + generated) as f64 / secs}))
}

async fn ttft_test(generator: &Generator, embedder: &LlamaEmbedder, n_chunks: usize) -> anyhow::Result<Value> {
    let dir = tempdir()?;
    let store = KbStore::open(&dir).await?;
    let kb = store.open_or_create("bench", embedder.dim()).await?;
    let mut rng = SplitMix(7);
    let rows: Vec<(Chunk, Vec<f32>)> = (0..n_chunks)
        .map(|i| {
            let text = synthetic_sentence(&mut rng, 60);
            let mut v: Vec<f32> = (0..embedder.dim()).map(|_| rng.next_f32() - 0.5).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            (Chunk::new(&format!("doc{}.txt", i / 100), (i % 100) as u32, 1, 1, text), v)
        })
        .collect();
    let sources: Vec<String> = rows.iter().map(|(c, _)| c.source.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    kb.replace_sources(&rows, &sources).await?;
    let pipeline = Pipeline {
        generator: generator.clone(),
        plugins: lore_plugins::PluginContext {
            embedder: Arc::new(embedder.clone()),
            scorer: Some(Arc::new(generator.clone())),
            cross_encoder: None,
        },
        max_answer_tokens: 32,
        sampling: Sampling { temperature: 0.0, ..Sampling::default() },
    };
    let mut result = serde_json::Map::new();
    for retriever in [RetrieverConfig::Vector, RetrieverConfig::default()] {
        // Search only: the `llm` reranker is generation work and is measured as such.
        let retrieval = Retrieval {
            retriever: retriever.clone(),
            rerankers: vec![],
            min_score: -1.0,
            passages: 4,
            top_k: 8,
            ..Retrieval::default()
        };
        let mut retrieval_ms = Vec::new();
        let mut embed_ms = Vec::new();
        let mut ttft_ms = Vec::new();
        for q in 0..21 {
            let question = synthetic_sentence(&mut rng, 12);
            // The question's embedding alone: the part of retrieval that is model work.
            let t = Instant::now();
            embedder.embed(std::slice::from_ref(&question)).await?;
            embed_ms.push(t.elapsed().as_secs_f64() * 1e3);
            let started = Instant::now();
            let answer = pipeline
                .prepare(Question { text: &question, kb: &kb, retrieval: &retrieval, template: &Template::default(), history: &[] })
                .await?;
            let crate::pipeline::Answer::Generate { mut generation, retrieval_time, .. } = answer else {
                anyhow::bail!("bench question abstained");
            };
            while let Some(e) = generation.events.recv().await {
                if matches!(e, Event::Text(_) | Event::Done(_) | Event::Failed(_)) {
                    break;
                }
            }
            if q == 0 {
                continue; // warm-up
            }
            ttft_ms.push(started.elapsed().as_secs_f64() * 1e3);
            retrieval_ms.push(retrieval_time.as_secs_f64() * 1e3);
        }
        result.insert(
            retriever.name().into(),
            json!({"chunks": n_chunks, "retrieval_ms_p50": percentile(&retrieval_ms, 50.0), "retrieval_ms_p95": percentile(&retrieval_ms, 95.0),
                   "question_embedding_ms_p50": percentile(&embed_ms[1..], 50.0),
                   "ttft_ms_p50": percentile(&ttft_ms, 50.0), "ttft_ms_p95": percentile(&ttft_ms, 95.0),
                   "retrieval_share_p50": percentile(&retrieval_ms, 50.0) / percentile(&ttft_ms, 50.0)}),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Value::Object(result))
}

async fn embed_test(embedder: &LlamaEmbedder, texts: &[String], reps: usize) -> anyhow::Result<Vec<f64>> {
    embedder.embed(&texts[..texts.len().min(16)]).await?; // warm-up
    let mut out = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        // The way ingest calls it: groups of 32 chunks.
        for group in texts.chunks(32) {
            embedder.embed(group).await?;
        }
        out.push(texts.len() as f64 / t.elapsed().as_secs_f64());
    }
    Ok(out)
}

/// Chunk-sized texts from the sample document, repeated with a counter to reach `n`.
fn sample_texts(n: usize) -> Vec<String> {
    let doc = include_str!("../../config/sample/honeybees.md");
    let paragraphs: Vec<&str> = doc.split("\n\n").map(str::trim).filter(|p| p.len() > 80).collect();
    (0..n).map(|i| format!("{} ({i})", paragraphs[i % paragraphs.len()].replace('\n', " "))).collect()
}

fn run_reference(
    reference: &Path,
    args: &BenchArgs,
    gen: &Path,
    emb: &Path,
    threads: usize,
    texts: &[String],
) -> anyhow::Result<Value> {
    let call = |extra: &[String]| -> anyhow::Result<Value> {
        let mut cmd = std::process::Command::new(reference);
        cmd.args(extra).args(["-t", &threads.to_string(), "-r", &args.reps.to_string(), "-ngl", &args.gpu_layers.to_string()]);
        let output = cmd.output().with_context(|| format!("cannot run {}", reference.display()))?;
        if !output.status.success() {
            anyhow::bail!("{} failed: {}", reference.display(), String::from_utf8_lossy(&output.stderr));
        }
        serde_json::from_slice(&output.stdout).with_context(|| format!("{} printed no JSON", reference.display()))
    };
    let m = gen.display().to_string();
    let bench = call(&["bench".into(), "-m".into(), m.clone(), "-p".into(), args.n_prompt.to_string(), "-n".into(), args.n_gen.to_string()])?;
    let np: Vec<String> = args.parallel.iter().map(|n| n.to_string()).collect();
    let batched = call(&[
        "batched".into(),
        "-m".into(),
        m,
        "-p".into(),
        args.batched_tokens.to_string(),
        "-n".into(),
        args.batched_tokens.to_string(),
        "-np".into(),
        np.join(","),
    ])?;
    let file = tempdir()?.join("texts.txt");
    std::fs::write(&file, texts.join("\n") + "\n")?;
    let embed = call(&["embed".into(), "-m".into(), emb.display().to_string(), "-f".into(), file.display().to_string()])?;
    let _ = std::fs::remove_dir_all(file.parent().expect("has parent"));
    Ok(json!({"bench": bench, "batched": batched, "embed": embed}))
}

/// The mean of two results of the same shape: numbers averaged, everything else from `a`.
fn mean_json(a: &Value, b: &Value) -> Value {
    match (a, b) {
        // Equal numbers (counts, parallelism) stay as they are, integers included.
        (Value::Number(x), Value::Number(y)) if x == y => a.clone(),
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) if !x.is_nan() && !y.is_nan() => json!((x + y) / 2.0),
            _ => a.clone(),
        },
        (Value::Object(x), Value::Object(y)) => {
            Value::Object(x.iter().map(|(k, v)| (k.clone(), y.get(k).map_or_else(|| v.clone(), |w| mean_json(v, w)))).collect())
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            Value::Array(x.iter().zip(y).map(|(v, w)| mean_json(v, w)).collect())
        }
        _ => a.clone(),
    }
}

fn ratios(out: &serde_json::Map<String, Value>) -> Value {
    let r = &out["reference"];
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mut batched = Vec::new();
    for b in out["batched"].as_array().into_iter().flatten() {
        let np = b["np"].clone();
        if let Some(rb) = r["batched"]["results"].as_array().and_then(|a| a.iter().find(|x| x["np"] == np)) {
            batched.push(json!({
                "np": np,
                "tg": f(&b["tg_tps"]["mean"]) / f(&rb["tg_tps"]),
                "total": f(&b["total_tps"]["mean"]) / f(&rb["total_tps"]),
            }));
        }
    }
    json!({
        "pp": f(&out["pp_tps"]["mean"]) / f(&r["bench"]["pp_tps_mean"]),
        "tg": f(&out["tg_tps"]["mean"]) / f(&r["bench"]["tg_tps_mean"]),
        "batched": batched,
        "embed": f(&out["embed_texts_per_s"]["mean"]) / f(&r["embed"]["texts_per_s_mean"]),
    })
}

fn print_table(out: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let ratio = |path: &[&str]| -> String {
        let mut v = &out["ratios"];
        for p in path {
            v = &v[*p];
        }
        if v.is_null() { "-".into() } else { format!("{:.2}", f(v)) }
    };
    println!("model {}  threads {}  gpu_layers {}  devices {}", out["model"].as_str().unwrap_or(""), out["threads"], out["gpu_layers"], out["devices"]);
    if let Some(d) = out.get("reference_drift") {
        println!(
            "reference: mean of a run before and one after lore's; second / first: pp {:.2}, tg {:.2}",
            f(&d["pp"]),
            f(&d["tg"])
        );
    }
    println!("{:<44} {:>12} {:>12} {:>7} {:>7}", "test", "lore", "reference", "ratio", "target");
    let row = |name: &str, lore: f64, reference: Option<f64>, ratio: String, target: &str| {
        let r = reference.map_or("-".into(), |x| format!("{x:.1}"));
        println!("{name:<44} {lore:>12.1} {r:>12} {ratio:>7} {target:>7}");
    };
    let rf = |path: &[&str]| -> Option<f64> {
        let mut v = &out["reference"];
        for p in path {
            v = &v[*p];
        }
        v.as_f64()
    };
    row("prompt processing (tok/s)", f(&out["pp_tps"]["mean"]), rf(&["bench", "pp_tps_mean"]), ratio(&["pp"]), ">=0.95");
    row("decode, one conversation (tok/s)", f(&out["tg_tps"]["mean"]), rf(&["bench", "tg_tps_mean"]), ratio(&["tg"]), ">=0.95");
    for (i, b) in out["batched"].as_array().into_iter().flatten().enumerate() {
        let np = b["np"].as_u64().unwrap_or(0);
        let reference = out["reference"]["batched"]["results"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["np"] == b["np"]))
            .and_then(|x| x["tg_tps"].as_f64());
        let r = out["ratios"]["batched"].get(i).map_or("-".into(), |x| format!("{:.2}", f(&x["tg"])));
        row(&format!("decode, {np} conversations (aggregate tok/s)"), f(&b["tg_tps"]["mean"]), reference, r, ">=0.90");
    }
    let seq = &out["sequential"];
    let last = out["batched"].as_array().and_then(|a| a.iter().find(|b| b["np"] == seq["np"]));
    if let Some(last) = last {
        row(
            &format!("{} conversations, total tok/s: batched", seq["np"]),
            f(&last["total_tps"]["mean"]),
            None,
            format!("{:.2}", f(&last["total_tps"]["mean"]) / f(&seq["total_tps"])),
            "",
        );
        row(&format!("{} conversations, total tok/s: one by one", seq["np"]), f(&seq["total_tps"]), None, "-".into(), "");
    }
    for (name, t) in out["ttft"].as_object().into_iter().flatten() {
        row(&format!("time to first token, {name} (ms p50)"), f(&t["ttft_ms_p50"]), None, "-".into(), "");
        row(
            &format!("  retrieval on {} chunks (ms p50)", t["chunks"]),
            f(&t["retrieval_ms_p50"]),
            None,
            format!("{:.2}", f(&t["retrieval_share_p50"])),
            "<=25ms",
        );
        row("    of which embedding the question (ms p50)", f(&t["question_embedding_ms_p50"]), None, "-".into(), "");
    }
    row("ingest embedding (chunks/s)", f(&out["embed_texts_per_s"]["mean"]), rf(&["embed", "texts_per_s_mean"]), ratio(&["embed"]), ">=0.90");
    let m = &out["memory"];
    row(
        "peak RSS (MiB) vs models + KV cache",
        f(&m["peak_rss_bytes"]) / 1048576.0,
        Some((f(&m["model_bytes"]) + f(&m["embedder_bytes"]) + f(&m["kv_cache_bytes"])) / 1048576.0),
        format!("{:.2}", f(&m["ratio"])),
        "",
    );
    if let Some(s) = out.get("threads_sweep") {
        for r in s["results"].as_array().into_iter().flatten() {
            row(&format!("decode with {} threads (tok/s)", r["threads"]), f(&r["tg_tps"]), None, "-".into(), "");
        }
        row("configured threads vs best", f(&s["configured_vs_best"]), None, "-".into(), "");
    }
}

#[derive(serde::Serialize)]
struct Stats {
    mean: f64,
    std: f64,
    runs: Vec<f64>,
}

fn stats_json(x: &[f64]) -> Value {
    let m = mean(x);
    let var = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len().max(2) - 1) as f64;
    json!(Stats { mean: m, std: var.sqrt(), runs: x.to_vec() })
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len().max(1) as f64
}

pub fn percentile(x: &[f64], p: f64) -> f64 {
    if x.is_empty() {
        return f64::NAN;
    }
    let mut v = x.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (p / 100.0 * (v.len() - 1) as f64).round() as usize;
    v[rank.min(v.len() - 1)]
}

fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("lore-bench-{}-{}", std::process::id(), Instant::now().elapsed().as_nanos()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A tiny deterministic generator for synthetic data (no dependency needed for this).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }

    fn next_f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

const WORDS: &[&str] = &[
    "river", "castle", "engine", "garden", "market", "winter", "signal", "harbor", "forest", "copper", "ledger", "valley",
    "pilot", "bridge", "orchard", "lantern", "meadow", "quarry", "beacon", "canal", "fabric", "glacier", "island", "jungle",
    "kettle", "ladder", "mirror", "needle", "oyster", "pepper", "rocket", "saddle", "temple", "umbrella", "velvet", "walnut",
    "anchor", "basket", "candle", "desert", "falcon", "goblet", "hammer", "iceberg", "jacket", "kernel", "lemon", "magnet",
];

fn synthetic_sentence(rng: &mut SplitMix, words: usize) -> String {
    (0..words).map(|_| WORDS[(rng.next() % WORDS.len() as u64) as usize]).collect::<Vec<_>>().join(" ") + "."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_reference_runs_average_their_figures_but_keep_their_keys() {
        let a = json!({"bench": {"pp_tps_mean": 100.0}, "batched": {"results": [{"np": 4, "tg_tps": 10.0}]}, "model": "m"});
        let b = json!({"bench": {"pp_tps_mean": 200.0}, "batched": {"results": [{"np": 4, "tg_tps": 30.0}]}, "model": "m"});
        let m = mean_json(&a, &b);
        assert_eq!(m["bench"]["pp_tps_mean"], json!(150.0));
        assert_eq!(m["batched"]["results"][0], json!({"np": 4, "tg_tps": 20.0}));
        assert_eq!(m["model"], json!("m"));
    }
}
