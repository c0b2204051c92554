//! `lore-bench`: the engine's benchmarks alone, without the knowledge-base store, so the
//! binary stays small enough to ship to a GPU machine (scripts/gpu-check). Models are
//! given on the command line.

use clap::Parser;

#[derive(Parser)]
#[command(version, about = "lore's engine benchmarks (lore bench without retrieval)")]
struct Cli {
    #[command(flatten)]
    bench: lore_engine::bench::EngineArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (Some(model), Some(embedder)) = (cli.bench.model.clone(), cli.bench.embedder.clone()) else {
        anyhow::bail!("give the models: --model GENERATOR.gguf --embedder EMBEDDER.gguf");
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(lore_engine::bench::run(cli.bench, model, embedder, &[]))
}
