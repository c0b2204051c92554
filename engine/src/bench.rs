//! The engine's speed, measured the way llama.cpp's tools measure theirs, next to a
//! reference program built from the same llama.cpp libraries (scripts/bench/reference.cpp)
//! when one is given. Prints a table, or one JSON object with `--json`. `lore bench` adds
//! the daemon's tests (retrieval, load, the HTTP hop), their flags and their table rows
//! through [`ExtraTest`]; `lore-bench` runs the engine's alone.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use lore_core::{ChatModel, Embedder, Event, GenerateRequest, PromptText, Sampling};
use serde_json::{json, Value};

use crate::settings::{EmbedderConfig, GeneratorConfig};
use crate::{Generator, LlamaEmbedder};

#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
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

/// A measurement that needs more than the engine (the daemon's retrieval, load and HTTP
/// tests), run on the loaded models after the generation tests. Its rows follow theirs in
/// the table.
#[async_trait::async_trait]
pub trait ExtraTest: Sync {
    /// Key of its result in the JSON output.
    fn key(&self) -> &'static str;
    /// What the progress line says while it runs.
    fn title(&self) -> &'static str;
    async fn run(&self, args: &EngineArgs, generator: &Generator, embedder: &LlamaEmbedder) -> anyhow::Result<Value>;
    /// Its lines in the table, from its result.
    fn rows(&self, result: &Value) -> Vec<Row>;
}

/// Every engine measurement, and each of `extras` on the loaded models.
pub async fn run(
    args: EngineArgs,
    gen_path: PathBuf,
    emb_path: PathBuf,
    extras: &[&dyn ExtraTest],
) -> anyhow::Result<()> {
    let mut bench = Bench::new(args, gen_path, emb_path);
    // The reference runs before and after lore and its figures are averaged: on a small
    // shared machine speed drifts by minutes, and a one-sided reference would blame lore.
    let before = bench.reference("first")?;
    let generator = bench.generation_tests().await?;
    let embedder = bench.load_embedder()?;
    for test in extras {
        bench.progress(test.title());
        let result = test.run(&bench.args, &generator, &embedder).await?;
        bench.out.insert(test.key().into(), result);
    }
    bench.embedding_test(&embedder).await?;
    bench.memory(&generator);
    // The sweep measures decoding alone: no other model's threads around.
    drop(generator);
    drop(embedder);
    bench.thread_sweep().await?;
    if let Some(before) = before {
        let after = bench.reference("second")?.expect("a reference ran before");
        bench.compare(before, after);
    }
    bench.report(extras)
}

/// One benchmark run: its settings and the results so far (one JSON object).
struct Bench {
    args: EngineArgs,
    gen_path: PathBuf,
    emb_path: PathBuf,
    threads: usize,
    /// Chunk-sized texts for the embedding tests, the same for lore and the reference.
    texts: Vec<String>,
    out: serde_json::Map<String, Value>,
}

impl Bench {
    fn new(args: EngineArgs, gen_path: PathBuf, emb_path: PathBuf) -> Self {
        let gen_path = args.model.clone().unwrap_or(gen_path);
        let emb_path = args.embedder.clone().unwrap_or(emb_path);
        let threads = crate::thread_count(args.threads) as usize;
        let mut out = serde_json::Map::new();
        out.insert("model".into(), json!(gen_path.display().to_string()));
        out.insert("embedder".into(), json!(emb_path.display().to_string()));
        out.insert("threads".into(), json!(threads));
        out.insert("gpu_layers".into(), json!(args.gpu_layers));
        out.insert("devices".into(), json!(crate::devices()));
        let texts = sample_texts(args.embed_texts);
        Self { args, gen_path, emb_path, threads, texts, out }
    }

    fn progress(&self, what: &str) {
        if !self.args.json {
            eprintln!("bench: {what}");
        }
    }

    /// A generator sized for every test, on `parallel` sequences and `threads` threads.
    fn generator_config(&self, parallel: usize, threads: usize) -> GeneratorConfig {
        let per_seq = (self.args.n_prompt + self.args.n_gen).max(2 * self.args.batched_tokens) + 64;
        GeneratorConfig {
            gpu_layers: self.args.gpu_layers,
            context_tokens: per_seq,
            parallel,
            threads: Some(threads),
            max_answer_tokens: (per_seq / 2).max(1),
            max_queue: 256,
            ..GeneratorConfig::new(self.gen_path.clone())
        }
    }

    /// The reference program's figures, when one is given.
    fn reference(&self, which: &str) -> anyhow::Result<Option<Value>> {
        let Some(reference) = &self.args.reference else { return Ok(None) };
        self.progress(&format!("reference (llama.cpp C API), {which} run"));
        let (gen, emb) = (&self.gen_path, &self.emb_path);
        Ok(Some(run_reference(reference, &self.args, gen, emb, self.threads, &self.texts)?))
    }

    /// Prompt processing, decoding, and conversations decoded together and one by one.
    async fn generation_tests(&mut self) -> anyhow::Result<Generator> {
        let args = &self.args;
        let max_parallel = args.parallel.iter().copied().max().unwrap_or(1);
        self.progress("loading");
        let generator = Generator::load(&self.generator_config(max_parallel, self.threads))?;
        self.progress("prompt processing and decode");
        let pp = pp_test(&generator, args.n_prompt, args.reps).await?;
        let tg = tg_test(&generator, args.n_gen, args.reps).await?;
        self.out.insert("pp_tps".into(), stats_json(&pp));
        self.out.insert("tg_tps".into(), stats_json(&tg));
        self.progress("concurrent conversations");
        let mut batched = Vec::new();
        for &np in &args.parallel {
            batched.push(batched_test(&generator, np, args.batched_tokens, args.reps).await?);
        }
        let sequential = sequential_test(&generator, max_parallel, args.batched_tokens).await?;
        self.out.insert("batched".into(), json!(batched));
        self.out.insert("sequential".into(), sequential);
        Ok(generator)
    }

    fn load_embedder(&self) -> anyhow::Result<LlamaEmbedder> {
        Ok(LlamaEmbedder::load(&emb_config(&self.emb_path, self.threads, self.args.gpu_layers))?)
    }

    async fn embedding_test(&mut self, embedder: &LlamaEmbedder) -> anyhow::Result<()> {
        self.progress("ingest embedding");
        let embed = embed_test(embedder, &self.texts, self.args.reps).await?;
        self.out.insert("embed_texts_per_s".into(), stats_json(&embed));
        Ok(())
    }

    /// Peak resident memory of the process against what the models and the cache need.
    fn memory(&mut self, generator: &Generator) {
        let rss = peak_rss_bytes();
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let (model_bytes, emb_bytes) = (size(&self.gen_path), size(&self.emb_path));
        let kv = generator.kv_cache_bytes();
        self.out.insert(
            "memory".into(),
            json!({
                "peak_rss_bytes": rss,
                "model_bytes": model_bytes,
                "embedder_bytes": emb_bytes,
                "kv_cache_bytes": kv,
                "ratio": rss as f64 / (model_bytes + emb_bytes + kv) as f64,
            }),
        );
    }

    /// Decoding speed with 1, half, all and twice the cores' threads (CPU only).
    async fn thread_sweep(&mut self) -> anyhow::Result<()> {
        if self.args.no_thread_sweep || self.args.gpu_layers > 0 {
            return Ok(());
        }
        self.progress("thread sweep");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut counts: Vec<usize> =
            [1, cores / 2, cores, cores * 2, self.threads].into_iter().filter(|&n| n >= 1).collect();
        counts.sort();
        counts.dedup();
        let mut sweep = Vec::new();
        for n in counts {
            let g = Generator::load(&self.generator_config(1, n))?;
            let t = tg_test(&g, self.args.n_gen.min(64), 1).await?;
            sweep.push(json!({"threads": n, "tg_tps": mean(&t)}));
        }
        let best = sweep.iter().map(|s| s["tg_tps"].as_f64().unwrap_or(0.0)).fold(0.0, f64::max);
        let configured = sweep
            .iter()
            .find(|s| s["threads"] == json!(self.threads))
            .and_then(|s| s["tg_tps"].as_f64())
            .unwrap_or(0.0);
        self.out.insert("threads_sweep".into(), json!({"results": sweep, "configured_vs_best": configured / best}));
        Ok(())
    }

    /// The reference's two runs averaged, their drift, and lore's ratios against them.
    fn compare(&mut self, before: Value, after: Value) {
        let f = |v: &Value, a: &str, b: &str| number(&v[a][b]);
        self.out.insert(
            "reference_drift".into(),
            json!({
                "pp": f(&after, "bench", "pp_tps_mean") / f(&before, "bench", "pp_tps_mean"),
                "tg": f(&after, "bench", "tg_tps_mean") / f(&before, "bench", "tg_tps_mean"),
            }),
        );
        self.out.insert("reference".into(), mean_json(&before, &after));
        self.out.insert("reference_runs".into(), json!([before, after]));
        let ratios = ratios(&self.out);
        self.out.insert("ratios".into(), ratios);
    }

    /// Prints the table (or the JSON) and writes `--json-out`.
    fn report(self, extras: &[&dyn ExtraTest]) -> anyhow::Result<()> {
        let out = Value::Object(self.out);
        if let Some(file) = &self.args.json_out {
            std::fs::write(file, serde_json::to_vec_pretty(&out)?)
                .with_context(|| format!("cannot write {}", file.display()))?;
        }
        if self.args.json {
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            print_table(&out, extras);
        }
        Ok(())
    }
}

fn emb_config(path: &Path, threads: usize, gpu_layers: u32) -> EmbedderConfig {
    EmbedderConfig { threads: Some(threads), gpu_layers, ..EmbedderConfig::new(path.to_path_buf()) }
}

fn request(prompt: String, max_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        prompt: PromptText::template(prompt),
        max_tokens,
        stop: vec![],
        ignore_eos: true,
        sampling: Sampling::greedy(),
        lora: None,
    }
}

/// Text that tokenises to about `n` tokens (" the" is one token in most vocabularies).
/// Every call's text starts differently, so no request finds its prompt already in the
/// engine's prefix cache: these tests measure decoding, as llama.cpp's tools do.
fn prompt_of(generator: &Generator, n: usize) -> (String, usize) {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let salt = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let text = format!("{salt}:{}", " the".repeat(n.saturating_sub(3).max(1)));
    let tokens = generator.count_text_tokens(&text);
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
    // Not `Generation::collect`: the time of the first piece of text matters here.
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
            futures::future::try_join_all((0..np).map(|_| timed(generator, request(prompt_of(generator, n).0, n))))
                .await?;
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
    args: &EngineArgs,
    gen: &Path,
    emb: &Path,
    threads: usize,
    texts: &[String],
) -> anyhow::Result<Value> {
    let call = |extra: &[String]| -> anyhow::Result<Value> {
        let mut cmd = std::process::Command::new(reference);
        cmd.args(extra).args([
            "-t",
            &threads.to_string(),
            "-r",
            &args.reps.to_string(),
            "-ngl",
            &args.gpu_layers.to_string(),
        ]);
        let output = cmd.output().with_context(|| format!("cannot run {}", reference.display()))?;
        if !output.status.success() {
            anyhow::bail!("{} failed: {}", reference.display(), String::from_utf8_lossy(&output.stderr));
        }
        serde_json::from_slice(&output.stdout).with_context(|| format!("{} printed no JSON", reference.display()))
    };
    let m = gen.display().to_string();
    let bench = call(&[
        "bench".into(),
        "-m".into(),
        m.clone(),
        "-p".into(),
        args.n_prompt.to_string(),
        "-n".into(),
        args.n_gen.to_string(),
    ])?;
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
    let embed =
        call(&["embed".into(), "-m".into(), emb.display().to_string(), "-f".into(), file.display().to_string()])?;
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
        (Value::Object(x), Value::Object(y)) => Value::Object(
            x.iter().map(|(k, v)| (k.clone(), y.get(k).map_or_else(|| v.clone(), |w| mean_json(v, w)))).collect(),
        ),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            Value::Array(x.iter().zip(y).map(|(v, w)| mean_json(v, w)).collect())
        }
        _ => a.clone(),
    }
}

fn ratios(out: &serde_json::Map<String, Value>) -> Value {
    let r = &out["reference"];
    let mut batched = Vec::new();
    for b in out["batched"].as_array().into_iter().flatten() {
        let np = b["np"].clone();
        if let Some(rb) = r["batched"]["results"].as_array().and_then(|a| a.iter().find(|x| x["np"] == np)) {
            batched.push(json!({
                "np": np,
                "tg": number(&b["tg_tps"]["mean"]) / number(&rb["tg_tps"]),
                "total": number(&b["total_tps"]["mean"]) / number(&rb["total_tps"]),
            }));
        }
    }
    json!({
        "pp": number(&out["pp_tps"]["mean"]) / number(&r["bench"]["pp_tps_mean"]),
        "tg": number(&out["tg_tps"]["mean"]) / number(&r["bench"]["tg_tps_mean"]),
        "batched": batched,
        "embed": number(&out["embed_texts_per_s"]["mean"]) / number(&r["embed"]["texts_per_s_mean"]),
    })
}

/// One line of the table: a figure of lore's, the reference's figure for the same test
/// when there is one, their ratio and the ratio aimed at.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    name: String,
    lore: f64,
    reference: Option<f64>,
    ratio: Option<f64>,
    target: &'static str,
}

impl Row {
    pub fn new(name: impl Into<String>, lore: f64) -> Self {
        Self { name: name.into(), lore, reference: None, ratio: None, target: "" }
    }

    pub fn reference(self, reference: Option<f64>) -> Self {
        Self { reference, ..self }
    }

    pub fn ratio(self, ratio: Option<f64>) -> Self {
        Self { ratio, ..self }
    }

    pub fn target(self, target: &'static str) -> Self {
        Self { target, ..self }
    }

    /// The row as the table prints it ("-" for what it lacks).
    pub fn line(&self) -> String {
        let Self { name, lore, target, .. } = self;
        let reference = self.reference.map_or("-".into(), |x| format!("{x:.1}"));
        let ratio = self.ratio.map_or("-".into(), |x| format!("{x:.2}"));
        format!("{name:<44} {lore:>12.1} {reference:>12} {ratio:>7} {target:>7}")
    }
}

/// A figure of the JSON output (NaN where it is missing).
pub fn number(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// The table: what was measured on what, then a row per figure — the engine's generation
/// tests, each extra test's, then embedding, memory and the thread sweep.
fn print_table(out: &Value, extras: &[&dyn ExtraTest]) {
    println!("{}", table_header(out));
    let mut rows = generation_rows(out);
    for test in extras {
        rows.extend(test.rows(&out[test.key()]));
    }
    rows.extend(resource_rows(out));
    for row in rows {
        println!("{}", row.line());
    }
}

/// The run's settings, the reference's drift, and the column names.
fn table_header(out: &Value) -> String {
    let mut lines = vec![format!(
        "model {}  threads {}  gpu_layers {}  devices {}",
        out["model"].as_str().unwrap_or(""),
        out["threads"],
        out["gpu_layers"],
        out["devices"]
    )];
    if let Some(d) = out.get("reference_drift") {
        lines.push(format!(
            "reference: mean of a run before and one after lore's; second / first: pp {:.2}, tg {:.2}",
            number(&d["pp"]),
            number(&d["tg"])
        ));
    }
    lines.push(format!("{:<44} {:>12} {:>12} {:>7} {:>7}", "test", "lore", "reference", "ratio", "target"));
    lines.join("\n")
}

/// The reference's figure at `pointer` (`/bench/pp_tps_mean`), if it ran.
fn reference_figure(out: &Value, pointer: &str) -> Option<f64> {
    out["reference"].pointer(pointer).and_then(Value::as_f64)
}

/// lore's ratio to the reference at `pointer` (`/pp`), if the reference ran.
fn reference_ratio(out: &Value, pointer: &str) -> Option<f64> {
    out["ratios"].pointer(pointer).filter(|v| !v.is_null()).map(number)
}

/// Prompt processing, decoding alone and batched, and batched against one by one.
fn generation_rows(out: &Value) -> Vec<Row> {
    let mut rows = vec![
        Row::new("prompt processing (tok/s)", number(&out["pp_tps"]["mean"]))
            .reference(reference_figure(out, "/bench/pp_tps_mean"))
            .ratio(reference_ratio(out, "/pp"))
            .target(">=0.95"),
        Row::new("decode, one conversation (tok/s)", number(&out["tg_tps"]["mean"]))
            .reference(reference_figure(out, "/bench/tg_tps_mean"))
            .ratio(reference_ratio(out, "/tg"))
            .target(">=0.95"),
    ];
    for (i, b) in out["batched"].as_array().into_iter().flatten().enumerate() {
        let np = b["np"].as_u64().unwrap_or(0);
        let reference = out["reference"]["batched"]["results"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["np"] == b["np"]))
            .and_then(|x| x["tg_tps"].as_f64());
        let ratio = out["ratios"]["batched"].get(i).map(|x| number(&x["tg"]));
        let name = format!("decode, {np} conversations (aggregate tok/s)");
        rows.push(Row::new(name, number(&b["tg_tps"]["mean"])).reference(reference).ratio(ratio).target(">=0.90"));
    }
    let seq = &out["sequential"];
    let last = out["batched"].as_array().and_then(|a| a.iter().find(|b| b["np"] == seq["np"]));
    if let Some(last) = last {
        let batched = number(&last["total_tps"]["mean"]);
        let one_by_one = number(&seq["total_tps"]);
        let np = &seq["np"];
        rows.push(
            Row::new(format!("{np} conversations, total tok/s: batched"), batched).ratio(Some(batched / one_by_one)),
        );
        rows.push(Row::new(format!("{np} conversations, total tok/s: one by one"), one_by_one));
    }
    rows
}

/// Embedding for ingest, memory against what the models and the cache need, and decoding
/// speed by thread count.
fn resource_rows(out: &Value) -> Vec<Row> {
    let m = &out["memory"];
    let needed = number(&m["model_bytes"]) + number(&m["embedder_bytes"]) + number(&m["kv_cache_bytes"]);
    let mut rows = vec![
        Row::new("ingest embedding (chunks/s)", number(&out["embed_texts_per_s"]["mean"]))
            .reference(reference_figure(out, "/embed/texts_per_s_mean"))
            .ratio(reference_ratio(out, "/embed"))
            .target(">=0.90"),
        Row::new("peak RSS (MiB) vs models + KV cache", number(&m["peak_rss_bytes"]) / 1048576.0)
            .reference(Some(needed / 1048576.0))
            .ratio(Some(number(&m["ratio"]))),
    ];
    if let Some(s) = out.get("threads_sweep") {
        for r in s["results"].as_array().into_iter().flatten() {
            rows.push(Row::new(format!("decode with {} threads (tok/s)", r["threads"]), number(&r["tg_tps"])));
        }
        rows.push(Row::new("configured threads vs best", number(&s["configured_vs_best"])));
    }
    rows
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

pub fn tempdir() -> anyhow::Result<PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("lore-bench-{}-{}", std::process::id(), Instant::now().elapsed().as_nanos()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_reference_runs_average_their_figures_but_keep_their_keys() {
        let a =
            json!({"bench": {"pp_tps_mean": 100.0}, "batched": {"results": [{"np": 4, "tg_tps": 10.0}]}, "model": "m"});
        let b =
            json!({"bench": {"pp_tps_mean": 200.0}, "batched": {"results": [{"np": 4, "tg_tps": 30.0}]}, "model": "m"});
        let m = mean_json(&a, &b);
        assert_eq!(m["bench"]["pp_tps_mean"], json!(150.0));
        assert_eq!(m["batched"]["results"][0], json!({"np": 4, "tg_tps": 20.0}));
        assert_eq!(m["model"], json!("m"));
    }

    #[test]
    fn the_table_has_a_row_per_figure_and_a_dash_for_what_is_missing() {
        let out = json!({
            "pp_tps": {"mean": 812.34}, "tg_tps": {"mean": 101.2},
            "batched": [{"np": 4, "tg_tps": {"mean": 250.5}, "total_tps": {"mean": 900.75}}],
            "sequential": {"np": 4, "total_tps": 310.0},
            "embed_texts_per_s": {"mean": 150.5},
            "memory": {"peak_rss_bytes": 524288000, "model_bytes": 104857600, "embedder_bytes": 20971520,
                       "kv_cache_bytes": 10485760, "ratio": 3.85},
            "reference": {"bench": {"pp_tps_mean": 820.0, "tg_tps_mean": 105.0},
                          "batched": {"results": [{"np": 4, "tg_tps": 260.0}]}},
            "ratios": {"pp": 0.99, "tg": null, "batched": [{"np": 4, "tg": 0.963}]},
        });
        let lines: Vec<String> = generation_rows(&out).iter().chain(&resource_rows(&out)).map(Row::line).collect();
        assert_eq!(
            lines,
            [
                "prompt processing (tok/s)                           812.3        820.0    0.99  >=0.95",
                "decode, one conversation (tok/s)                    101.2        105.0       -  >=0.95",
                "decode, 4 conversations (aggregate tok/s)           250.5        260.0    0.96  >=0.90",
                "4 conversations, total tok/s: batched               900.8            -    2.91        ",
                "4 conversations, total tok/s: one by one            310.0            -       -        ",
                "ingest embedding (chunks/s)                         150.5            -       -  >=0.90",
                "peak RSS (MiB) vs models + KV cache                 500.0        130.0    3.85        ",
            ]
        );
    }
}
