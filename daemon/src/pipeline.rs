//! Where passages are chosen and the answer is generated: retrieve, rerank, abstain if the
//! evidence is weak, build the prompt, stream the answer.
//!
//! A [`Chain`] is one bot's (or one channel's) way to find passages, built once at start;
//! a [`Pipeline`] is what every chain shares: the generator and its settings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lore_core::{ChatModel, Event, GenerateRequest, Generation, Hit, PluginContext, ReplySink, Reranker, Retriever};
use lore_core::{SourceRef, StopReason};
use lore_plugins::KbHandle;

use crate::config::{AnswerStyle, Retrieval, Sampling};
use crate::evidence::{EvidenceFinder, Quote};
use crate::prompt::{self, Template, Turn};

/// One bot's or channel's retrieval, resolved once: the knowledge base, the retriever and
/// rerankers built for it, the thresholds, and the prompt template.
pub struct Chain {
    pub kb: KbHandle,
    retriever: Arc<dyn Retriever>,
    rerankers: Vec<Arc<dyn Reranker>>,
    pub settings: Retrieval,
    pub template: Template,
    /// The LoRA adapter answers are generated with (the bot's).
    pub lora: Option<lore_core::LoraAdapter>,
}

impl Chain {
    /// Builds the plugins `settings` name for `kb`; fails when one needs a model that is
    /// not loaded (the `llm` reranker without the generator, say).
    pub fn build(kb: KbHandle, settings: Retrieval, template: Template, cx: &PluginContext) -> anyhow::Result<Self> {
        let retriever = settings.retriever.build(kb.clone(), cx.embedder.clone());
        let rerankers = settings.rerankers.iter().map(|r| r.build(cx)).collect::<anyhow::Result<_>>()?;
        Ok(Self { kb, retriever, rerankers, settings, template, lora: None })
    }

    /// The retriever's top `top_k` for `question`, then each reranker in order.
    pub async fn retrieve(&self, question: &str) -> anyhow::Result<Vec<Hit>> {
        self.retrieve_with(question, Reranking::Full).await
    }

    /// Like [`Chain::retrieve`], leaving out the `llm` reranker when asked to.
    pub async fn retrieve_with(&self, question: &str, reranking: Reranking) -> anyhow::Result<Vec<Hit>> {
        let mut hits = self.retriever.retrieve(question, self.settings.top_k).await?;
        for (r, config) in self.rerankers.iter().zip(&self.settings.rerankers) {
            if reranking == Reranking::WithoutLlm && matches!(config, lore_plugins::RerankerConfig::Llm { .. }) {
                tracing::info!("others are waiting: skipping the llm reranker for this question");
                continue;
            }
            hits = r.rerank(question, hits).await?;
        }
        Ok(hits)
    }
}

/// How much reranking a question gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reranking {
    /// The whole configured chain.
    Full,
    /// Everything but the `llm` reranker (one prompt-sized pass per candidate): for
    /// questions answered while others wait, unless `admission.rerank_when_busy`.
    WithoutLlm,
}

/// What answering needs besides a chain; shared by every bot.
#[derive(Clone)]
pub struct Pipeline {
    pub model: Arc<dyn ChatModel>,
    pub max_answer_tokens: usize,
    pub sampling: Sampling,
    pub evidence: EvidenceFinder,
}

/// What the pipeline decided to do.
pub enum Answer {
    /// The evidence was too weak: reply with this text, no generation.
    Abstain { text: String, retrieved: Vec<Hit>, retrieval_time: Duration },
    /// The model is generating; with `quote`, the sentence that best supports its answer
    /// is quoted under it.
    Generate { generation: Generation, prompt: prompt::Prompt, retrieval_time: Duration, quote: Option<Quoting> },
    /// `answer_style: quote`: the sentence of the passages that best answers the question.
    Quoted { quote: Quote, passages: Vec<Hit>, retrieval_time: Duration },
}

/// What quoting the evidence after an answer needs.
pub struct Quoting {
    finder: EvidenceFinder,
    question: String,
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
    pub generated_tokens: usize,
    /// The sentence quoted as evidence (or given as the answer).
    pub quote: Option<Quote>,
}

impl Pipeline {
    /// Retrieves, decides whether to abstain, and starts generating.
    pub async fn prepare(&self, chain: &Chain, question: &str, history: &[Turn]) -> anyhow::Result<Answer> {
        self.prepare_with(chain, question, history, Reranking::Full).await
    }

    /// Like [`Pipeline::prepare`], with the given reranking.
    pub async fn prepare_with(
        &self,
        chain: &Chain,
        question: &str,
        history: &[Turn],
        reranking: Reranking,
    ) -> anyhow::Result<Answer> {
        let started = Instant::now();
        // A question that cannot fit costs no retrieval.
        prompt::check_question(self.model.as_ref(), question, self.max_answer_tokens).await?;
        let hits = chain.retrieve_with(question, reranking).await?;
        let voice = Voice { template: &chain.template, lora: chain.lora.as_ref() };
        self.answer_from(&chain.settings, voice, question, history, hits, started.elapsed()).await
    }

    /// Abstains or starts generating from passages already retrieved and reranked.
    pub async fn answer_from(
        &self,
        settings: &Retrieval,
        voice: Voice<'_>,
        question: &str,
        history: &[Turn],
        hits: Vec<Hit>,
        retrieval_time: Duration,
    ) -> anyhow::Result<Answer> {
        let best = best_similarity(&hits);
        if best.is_none_or(|b| b < settings.min_score) {
            tracing::info!(best, min_score = settings.min_score, "abstaining: weak evidence");
            return Ok(Answer::Abstain { text: settings.abstain_text.clone(), retrieved: hits, retrieval_time });
        }
        let passages: Vec<Hit> = hits.into_iter().take(settings.passages).collect();
        if settings.answer_style == AnswerStyle::Quote {
            return Ok(match self.evidence.best(question, None, &passages).await? {
                Some(quote) => Answer::Quoted { quote, passages, retrieval_time },
                None => Answer::Abstain { text: settings.abstain_text.clone(), retrieved: passages, retrieval_time },
            });
        }
        let prompt =
            prompt::build(self.model.as_ref(), voice.template, question, &passages, history, self.max_answer_tokens)
                .await?;
        let generation = self.model.generate(GenerateRequest {
            prompt: prompt.text.clone(),
            max_tokens: self.max_answer_tokens,
            stop: prompt.stop.clone(),
            ignore_eos: false,
            sampling: self.sampling.clone(),
            lora: voice.lora.cloned(),
        })?;
        let quote =
            settings.quote_evidence.then(|| Quoting { finder: self.evidence.clone(), question: question.to_string() });
        Ok(Answer::Generate { generation, prompt, retrieval_time, quote })
    }
}

/// How a place's answers are written: its prompt template, and the LoRA adapter (its
/// bot's) the generator applies.
#[derive(Clone, Copy)]
pub struct Voice<'a> {
    pub template: &'a Template,
    pub lora: Option<&'a lore_core::LoraAdapter>,
}

impl<'a> Voice<'a> {
    /// The template, with the base model.
    pub fn of(template: &'a Template) -> Self {
        Self { template, lora: None }
    }
}

/// The evidence compared with `min_score`: the best cosine similarity between the question
/// and a retrieved passage. `None` when nothing was retrieved or no retriever knew a
/// similarity: then the bot abstains.
pub fn best_similarity(hits: &[Hit]) -> Option<f32> {
    hits.iter().filter_map(|h| h.similarity).reduce(f32::max)
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
                generated_tokens: 0,
                quote: None,
            })
        }
        Answer::Quoted { quote, passages, retrieval_time } => {
            sink.finish(&quote.sentence, &source_refs(&passages)).await?;
            Ok(Outcome {
                text: quote.sentence.clone(),
                passages,
                abstained: false,
                stop: None,
                retrieval_time,
                first_token: Some(started.elapsed() + retrieval_time),
                total_time: started.elapsed() + retrieval_time,
                generated_tokens: 0,
                quote: Some(quote),
            })
        }
        Answer::Generate { mut generation, prompt, retrieval_time, quote: quoting } => {
            let mut text = String::new();
            let mut first_token = None;
            let mut stop = None;
            let mut generated_tokens = 0;
            // Not `Generation::collect`: every piece is shown as it arrives.
            while let Some(event) = generation.events.recv().await {
                match event {
                    // Not shown: people see their place in the router's line of questions;
                    // the engine's own queue also counts reranking jobs.
                    Event::Queued { position } => tracing::debug!(position, "generation queued in the engine"),
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
                        generated_tokens = f.generated_tokens;
                        break;
                    }
                    Event::Failed(message) => return Err(lore_core::GenerateError::Failed(message).into()),
                }
            }
            // The events ended without Done: the engine stopped mid-answer.
            if stop.is_none() {
                return Err(lore_core::GenerateError::Stopped.into());
            }
            let text = text.trim().to_string();
            let text = if text.is_empty() { "(no answer)".to_string() } else { text };
            // The answer stands without its quote: a failing embedder costs only the quote.
            let quote = match quoting {
                Some(q) => q.finder.best(&q.question, Some(&text), &prompt.passages).await.unwrap_or_else(|e| {
                    tracing::warn!(error = format!("{e:#}"), "could not choose the evidence to quote");
                    None
                }),
                None => None,
            };
            let shown = match &quote {
                Some(quote) => format!("{text}\n\n{}", quote.shown()),
                None => text.clone(),
            };
            sink.finish(&shown, &source_refs(&prompt.passages)).await?;
            Ok(Outcome {
                text,
                passages: prompt.passages,
                abstained: false,
                stop,
                retrieval_time,
                first_token,
                total_time: started.elapsed() + retrieval_time,
                generated_tokens,
                quote,
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
            let shown = cwd.as_ref().and_then(|c| path.strip_prefix(c).ok()).unwrap_or(path).display().to_string();
            SourceRef { number: i + 1, source: shown, location: h.chunk.location() }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use lore_core::testing::{EchoModel, HashEmbedder};
    use lore_core::Chunk;

    use super::*;

    fn hit(similarity: Option<f32>) -> Hit {
        Hit { chunk: Chunk::new("a.md", 0, 1, 2, "Bees dance.".into()), score: 0.5, similarity }
    }

    fn pipeline() -> Pipeline {
        let cx = PluginContext { embedder: Arc::new(HashEmbedder { dim: 4096 }), scorer: None, cross_encoder: None };
        Pipeline {
            model: Arc::new(EchoModel::new(512, "They dance [1].")),
            max_answer_tokens: 32,
            sampling: Sampling::default(),
            evidence: EvidenceFinder::new(&cx),
        }
    }

    #[test]
    fn evidence_is_the_best_known_similarity() {
        assert_eq!(best_similarity(&[]), None);
        assert_eq!(best_similarity(&[hit(None)]), None);
        assert_eq!(best_similarity(&[hit(Some(0.2)), hit(None), hit(Some(0.4))]), Some(0.4));
    }

    struct Record(Vec<String>);

    #[async_trait::async_trait]
    impl ReplySink for Record {
        async fn typing(&mut self) -> anyhow::Result<()> {
            Ok(())
        }
        async fn update(&mut self, text: &str) -> anyhow::Result<()> {
            self.0.push(format!("update {text}"));
            Ok(())
        }
        async fn finish(&mut self, text: &str, sources: &[SourceRef]) -> anyhow::Result<()> {
            self.0.push(format!("finish {text} sources {}", sources.len()));
            Ok(())
        }
        async fn say(&mut self, text: &str) -> anyhow::Result<()> {
            self.0.push(format!("say {text}"));
            Ok(())
        }
    }

    #[tokio::test]
    async fn weak_evidence_abstains_and_strong_evidence_answers_with_sources() {
        let settings = Retrieval { min_score: 0.3, ..Retrieval::default() };
        let p = pipeline();
        let t = Template::default();
        for weak in [vec![], vec![hit(Some(0.1))], vec![hit(None)]] {
            let mut sink = Record(vec![]);
            let answer = p.answer_from(&settings, Voice::of(&t), "How?", &[], weak, Duration::ZERO).await.unwrap();
            let outcome = respond(answer, &mut sink).await.unwrap();
            assert!(outcome.abstained);
            assert_eq!(sink.0, vec![format!("finish {} sources 0", settings.abstain_text)]);
        }
        let mut sink = Record(vec![]);
        let answer =
            p.answer_from(&settings, Voice::of(&t), "How?", &[], vec![hit(Some(0.8))], Duration::ZERO).await.unwrap();
        let outcome = respond(answer, &mut sink).await.unwrap();
        assert!(!outcome.abstained);
        assert_eq!(outcome.text, "They dance [1].");
        assert_eq!(sink.0.last().unwrap(), "finish They dance [1]. sources 1");
        assert!(sink.0[0].starts_with("update They"), "{:?}", sink.0);
    }

    /// Two passages of several sentences; the second passage's second sentence is the one
    /// about where bees dance.
    fn passages() -> Vec<Hit> {
        let text = |at: u32, t: &str| Hit {
            chunk: Chunk::new("b.md", at, at, at, t.into()),
            score: 0.5,
            similarity: Some(0.8),
        };
        vec![
            text(1, "# Bees\n\nHoney is stored in wax cells. Workers fan their wings to dry it."),
            text(2, "Queens lay the eggs of the colony. Bees dance on the comb to show where flowers grow."),
        ]
    }

    #[tokio::test]
    async fn quoted_evidence_goes_under_the_answer_or_is_the_answer() {
        let p = pipeline();
        let t = Template::default();
        let quoting = Retrieval { quote_evidence: true, passages: 2, ..Retrieval::default() };
        let mut sink = Record(vec![]);
        let answer = p
            .answer_from(&quoting, Voice::of(&t), "Where do bees dance?", &[], passages(), Duration::ZERO)
            .await
            .unwrap();
        let outcome = respond(answer, &mut sink).await.unwrap();
        let expected = Quote { sentence: "Bees dance on the comb to show where flowers grow.".into(), passage: 2 };
        assert_eq!(outcome.quote.as_ref(), Some(&expected));
        assert_eq!(outcome.text, "They dance [1].", "the answer itself is unchanged");
        let shown = format!("finish They dance [1].\n\nEvidence [2]: “{}” sources 2", expected.sentence);
        assert_eq!(sink.0.last().unwrap(), &shown);

        let quote_only = Retrieval { answer_style: AnswerStyle::Quote, passages: 2, ..Retrieval::default() };
        let mut sink = Record(vec![]);
        let answer = p
            .answer_from(&quote_only, Voice::of(&t), "Where do bees dance?", &[], passages(), Duration::ZERO)
            .await
            .unwrap();
        let outcome = respond(answer, &mut sink).await.unwrap();
        assert_eq!((outcome.text.as_str(), outcome.generated_tokens), (expected.sentence.as_str(), 0));
        assert_eq!(sink.0, vec![format!("finish {} sources 2", expected.sentence)], "no generation, nothing streamed");
    }
}
