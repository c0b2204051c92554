//! Where passages are chosen and the answer is generated: embed the question, retrieve,
//! rerank, abstain if the evidence is weak, build the prompt, stream the answer.

use std::time::{Duration, Instant};

use lore_adapters::{ReplySink, SourceRef};
use lore_plugins::{Hit, KnowledgeBase, PluginContext};

use crate::config::{Retrieval, Sampling};
use crate::engine::{Event, GenerateRequest, Generation, Generator, StopReason};
use crate::prompt::{self, Template, Turn};

/// Everything needed to answer questions; shared by every bot.
#[derive(Clone)]
pub struct Pipeline {
    pub generator: Generator,
    /// What retrievers and rerankers use: the embedder, this generator as the `llm`
    /// reranker's scorer, the cross-encoder when one is configured.
    pub plugins: PluginContext,
    pub max_answer_tokens: usize,
    pub sampling: Sampling,
}

/// One question and where to look for its answer.
pub struct Question<'a> {
    pub text: &'a str,
    pub kb: &'a KnowledgeBase,
    pub retrieval: &'a Retrieval,
    pub template: &'a Template,
    pub history: &'a [Turn],
}

/// What the pipeline decided to do.
pub enum Answer {
    /// The evidence was too weak: reply with this text, no generation.
    Abstain { text: String, retrieved: Vec<Hit>, retrieval_time: Duration },
    /// The model is generating.
    Generate { generation: Generation, prompt: prompt::Prompt, retrieval_time: Duration },
}

/// How an answer ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub text: String,
    /// Passages shown to the model, [1] first (empty when it abstained).
    pub passages: Vec<Hit>,
    pub abstained: bool,
    pub stop: Option<StopReason>,
    pub retrieval_time: Duration,
    pub first_token: Option<Duration>,
    pub total_time: Duration,
}

impl Pipeline {
    /// Retrieves and reranks the passages for `question`, best first.
    pub async fn retrieve(&self, kb: &KnowledgeBase, question: &str, retrieval: &Retrieval) -> anyhow::Result<Vec<Hit>> {
        retrieve(&self.plugins, kb, question, retrieval).await
    }

    /// Retrieves, decides whether to abstain, and starts generating.
    pub async fn prepare(&self, q: Question<'_>) -> anyhow::Result<Answer> {
        let started = Instant::now();
        let hits = self.retrieve(q.kb, q.text, q.retrieval).await?;
        self.answer_from(q, hits, started.elapsed())
    }

    /// Abstains or starts generating from passages already retrieved and reranked.
    pub fn answer_from(&self, q: Question<'_>, hits: Vec<Hit>, retrieval_time: Duration) -> anyhow::Result<Answer> {
        let best = best_similarity(&hits);
        if hits.is_empty() || best < q.retrieval.min_score {
            tracing::info!(best, min_score = q.retrieval.min_score, "abstaining: weak evidence");
            return Ok(Answer::Abstain { text: q.retrieval.abstain_text.clone(), retrieved: hits, retrieval_time });
        }
        let passages: Vec<Hit> = hits.into_iter().take(q.retrieval.passages).collect();
        let prompt = prompt::build(&self.generator, q.template, q.text, &passages, q.history, self.max_answer_tokens)?;
        let generation = self.generator.generate(GenerateRequest {
            prompt: prompt.text.clone(),
            max_tokens: self.max_answer_tokens,
            stop: prompt.stop.clone(),
            ignore_eos: false,
            sampling: self.sampling.clone(),
        })?;
        Ok(Answer::Generate { generation, prompt, retrieval_time })
    }
}

/// The retriever's top `top_k` for `question`, then each reranker of the chain in order.
pub async fn retrieve(cx: &PluginContext, kb: &KnowledgeBase, question: &str, retrieval: &Retrieval) -> anyhow::Result<Vec<Hit>> {
    let retriever = retrieval.retriever.build(cx.embedder.clone());
    let mut hits = retriever.retrieve(kb, question, retrieval.top_k).await?;
    for r in &retrieval.rerankers {
        hits = r.build(cx)?.rerank(question, hits).await?;
    }
    Ok(hits)
}

/// The evidence strength compared with `min_score`: the best cosine similarity among the
/// hits (a reranker's own score where no similarity is known).
pub fn best_similarity(hits: &[Hit]) -> f32 {
    hits.iter().map(|h| h.similarity.unwrap_or(h.score)).fold(f32::MIN, f32::max)
}

/// Streams `answer` into `sink` and finishes it with sources.
pub async fn respond(answer: Answer, sink: &mut dyn ReplySink) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    match answer {
        Answer::Abstain { text, retrieval_time, .. } => {
            sink.finish(&text, &[]).await?;
            Ok(Outcome {
                text,
                passages: vec![],
                abstained: true,
                stop: None,
                retrieval_time,
                first_token: None,
                total_time: started.elapsed() + retrieval_time,
            })
        }
        Answer::Generate { mut generation, prompt, retrieval_time } => {
            let mut text = String::new();
            let mut first_token = None;
            let mut stop = None;
            while let Some(event) = generation.events.recv().await {
                match event {
                    Event::Queued { position } => {
                        sink.update(&format!("(waiting: {} in line)", ordinal(position))).await?;
                    }
                    Event::Text(piece) => {
                        first_token.get_or_insert_with(|| started.elapsed() + retrieval_time);
                        text.push_str(&piece);
                        let shown = text.trim_start();
                        if !shown.is_empty() {
                            sink.update(shown).await?;
                        }
                    }
                    Event::Done(f) => {
                        stop = Some(f.reason);
                        break;
                    }
                    Event::Failed(message) => anyhow::bail!("{message}"),
                }
            }
            let text = text.trim().to_string();
            let text = if text.is_empty() { "(no answer)".to_string() } else { text };
            sink.finish(&text, &source_refs(&prompt.passages)).await?;
            Ok(Outcome {
                text,
                passages: prompt.passages,
                abstained: false,
                stop,
                retrieval_time,
                first_token,
                total_time: started.elapsed() + retrieval_time,
            })
        }
    }
}

/// Sources as shown to users: numbered like the prompt, paths relative to the working
/// folder where possible.
pub fn source_refs(passages: &[Hit]) -> Vec<SourceRef> {
    let cwd = std::env::current_dir().ok();
    passages
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let path = std::path::Path::new(&h.chunk.source);
            let shown = cwd
                .as_ref()
                .and_then(|c| path.strip_prefix(c).ok())
                .unwrap_or(path)
                .display()
                .to_string();
            SourceRef { number: i + 1, source: shown, location: h.chunk.location() }
        })
        .collect()
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}
