//! Where passages are chosen and the answer is generated and judged: retrieve, rerank,
//! judge the evidence, build the prompt, generate, judge the answer, deliver.
//!
//! A [`Chain`] is one bot's (or one channel's) way to find passages, built once at start;
//! a [`Pipeline`] is what every chain shares: the generator and its settings.
//!
//! Judging: a question whose best passage is less similar than `min_score` is not
//! answered. With a calibration (`retrieval.abstain.calibration`), the evidence is also
//! judged before generating and the answer after (see `confidence.rs`); a judged answer
//! is delivered whole once judged, not streamed, so nobody reads what is then withheld.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lore_core::{ChatModel, Event, GenerateRequest, Generation, Hit, PluginContext, ReplySink, Reranker, Retriever};
use lore_core::{SourceRef, StopReason};
use lore_knowledge::language::LANGUAGES;
use lore_knowledge::{KbHandle, Language, RerankerConfig};

use crate::config::{AnswerStyle, Instead, Retrieval, Sampling};
use crate::question::answer_text::{content_words, stands_in, words_found};
use crate::question::confidence::{signal, Calibration, Judgement, Signals, Stage};
use crate::question::evidence::{EvidenceFinder, Quote};
use crate::question::prompt::{self, Template, Turn};
use crate::question::speaks::ModelLanguages;

/// One bot's or channel's retrieval, resolved once: the knowledge base, the retriever and
/// rerankers built for it, the thresholds and calibration, and the prompt template.
pub struct Chain {
    pub kb: KbHandle,
    rerankers: Vec<Arc<dyn Reranker>>,
    pub settings: Retrieval,
    /// The LoRA adapter answers are generated with (the bot's).
    pub lora: Option<lore_core::LoraAdapter>,
    /// `settings.abstain.calibration`, read.
    pub calibration: Option<Arc<Calibration>>,
    /// How its sources are named to people.
    pub names: SourceNames,
    /// The language it answers in, when the config says (the bot's, else its knowledge
    /// base's); `None`: its knowledge base's as stored at ingest (`language: auto`).
    pub answers_in: Option<Language>,
    /// How it answers in each language, in the order of `LANGUAGES` (see [`Chain::voice`]).
    languages: Vec<InLanguage>,
}

/// How a chain works in one language: as the language of its answers, the built-in
/// prompts and "I don't know" in it; as its knowledge base's, what the models can do there.
struct InLanguage {
    language: Language,
    settings: Retrieval,
    template: Template,
    /// Leaning on full text where the embedder does not speak the language.
    retriever: Arc<dyn Retriever>,
    /// Whether the generator speaks it: where it does not, answers quote the passage, and
    /// the `llm` reranker, whose scores are the generator's reading of the passage, is
    /// left out.
    generator_speaks: bool,
    /// Whether the embedder speaks it: where it does not, quotes are chosen by the
    /// question's words, not by cosine similarity.
    embedder_speaks: bool,
}

/// Passages found for a question, best first, with the retrieval signals.
pub struct Retrieved {
    pub hits: Vec<Hit>,
    pub signals: Signals,
}

impl Chain {
    /// Builds the plugins `settings` name for `kb` and reads its calibration; fails when a
    /// plugin needs a model that is not loaded (the `llm` reranker without the generator,
    /// say) or the calibration cannot be read.
    ///
    /// In a language the generator does not speak (`models`), answers quote the passage;
    /// in one the embedder does not speak, hybrid retrieval leans on full text.
    pub fn build(
        kb: KbHandle,
        settings: Retrieval,
        template: Template,
        cx: &PluginContext,
        models: &ModelLanguages,
    ) -> anyhow::Result<Self> {
        let rerankers = settings.rerankers.iter().map(|r| r.build(cx)).collect::<anyhow::Result<_>>()?;
        let calibration = match &settings.abstain.calibration {
            Some(file) => Some(Arc::new(Calibration::load(file)?)),
            None => None,
        };
        let languages = LANGUAGES
            .iter()
            .map(|&language| {
                let mut settings = settings.in_language(language);
                let (generator_speaks, embedder_speaks) =
                    (models.generator.speaks(language), models.embedder.speaks(language));
                if !embedder_speaks {
                    settings.retriever = settings.retriever.leaning_on_full_text();
                }
                let retriever = settings.retriever.build(kb.clone(), cx.embedder.clone());
                let template = template.in_language(language);
                InLanguage { language, settings, template, retriever, generator_speaks, embedder_speaks }
            })
            .collect();
        Ok(Self {
            kb,
            rerankers,
            settings,
            lora: None,
            calibration,
            names: SourceNames::default(),
            answers_in: None,
            languages,
        })
    }

    /// The language it answers in: the configured one, else its knowledge base's.
    pub async fn language(&self) -> Language {
        match self.answers_in {
            Some(language) => language,
            None => self.kb_language().await,
        }
    }

    /// Its knowledge base's language as stored (English for one not yet ingested, or
    /// ingested before languages were kept): what the models must read.
    pub async fn kb_language(&self) -> Language {
        match self.kb.get().await {
            Ok(Some(kb)) => kb.language().await.ok().flatten().unwrap_or_default(),
            _ => Language::default(),
        }
    }

    /// Its settings and voice answering in `answer` from passages in `kb`: the prompts and
    /// "I don't know" of `answer`; quotes, not generated answers, when the generator does
    /// not speak one of them.
    pub fn voice(&self, answer: Language, kb: Language) -> (Retrieval, Voice<'_>) {
        let lora = self.lora.as_ref();
        let (text, passages) = (self.in_language(answer), self.in_language(kb));
        let mut settings = text.settings.clone();
        if !(text.generator_speaks && passages.generator_speaks) {
            settings.answer_style = AnswerStyle::Quote;
        }
        (settings, Voice { template: &text.template, lora, quote_by_words: !passages.embedder_speaks })
    }

    fn in_language(&self, language: Language) -> &InLanguage {
        self.languages.iter().find(|l| l.language == language).expect("a chain is built for every language")
    }

    /// The retriever's top `top_k` for `question`, then each reranker in order.
    pub async fn retrieve(&self, question: &str) -> anyhow::Result<Vec<Hit>> {
        Ok(self.retrieve_with(question, Reranking::Full).await?.hits)
    }

    /// Like [`Chain::retrieve`], leaving out the `llm` reranker when asked to, with the
    /// retrieval signals.
    pub async fn retrieve_with(&self, question: &str, reranking: Reranking) -> anyhow::Result<Retrieved> {
        self.retrieve_in(question, reranking, self.kb_language().await).await
    }

    /// Like [`Chain::retrieve_with`], for a knowledge base whose language is already read.
    async fn retrieve_in(&self, question: &str, reranking: Reranking, kb: Language) -> anyhow::Result<Retrieved> {
        // Searched, and read by the generator, in the knowledge base's language.
        let passages = self.in_language(kb);
        let llm_reranks = passages.generator_speaks;
        let mut hits = passages.retriever.retrieve(question, self.settings.top_k).await?;
        let retriever_top = hits.first().map(|h| h.score);
        // Whether the first passage's score is now a model's judgement of the pair.
        let mut scored_by_model = false;
        for (r, config) in self.rerankers.iter().zip(&self.settings.rerankers) {
            if matches!(config, RerankerConfig::Llm { .. }) && !llm_reranks {
                tracing::debug!("the generator does not speak the knowledge base's language: no llm reranker");
                continue;
            }
            if reranking == Reranking::WithoutLlm && matches!(config, RerankerConfig::Llm { .. }) {
                tracing::info!("others are waiting: skipping the llm reranker for this question");
                continue;
            }
            hits = r.rerank(question, hits).await?;
            scored_by_model |= matches!(config, RerankerConfig::Llm { .. } | RerankerConfig::CrossEncoder { .. });
        }
        let signals = Signals::of_retrieval(&hits, retriever_top, scored_by_model);
        tracing::debug!(kb = %self.kb.name(), hits = hits.len(), best = best_similarity(&hits), "retrieved");
        Ok(Retrieved { hits, signals })
    }

    /// How this chain's answers are judged for a turn with `reranking`.
    pub fn judging(&self, reranking: Reranking) -> Judging {
        Judging {
            calibration: self.calibration.clone(),
            costly: reranking == Reranking::Full,
            observe: false,
            names: self.names.clone(),
        }
    }
}

/// How much reranking a question gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reranking {
    /// The whole configured chain.
    Full,
    /// Everything but the `llm` reranker (one prompt-sized pass per candidate): for
    /// questions answered while others wait, unless `line.rerank_when_busy`.
    WithoutLlm,
}

/// How an answer is judged.
#[derive(Clone, Default)]
pub struct Judging {
    pub calibration: Option<Arc<Calibration>>,
    /// Measure the signals that cost generator passes (the open-book and closed-book
    /// likelihoods of the answer); off for turns that skip the `llm` reranker.
    pub costly: bool,
    /// Measure every signal and withhold nothing (`lore eval`, `lore calibrate`).
    pub observe: bool,
    /// How sources are named in the answer.
    pub names: SourceNames,
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
    Abstain { text: String, retrieved: Vec<Hit>, retrieval_time: Duration, judged: Judged },
    /// The model is generating; its answer is judged (and quoted) when `judge` says so.
    Generate { generation: Generation, prompt: prompt::Prompt, retrieval_time: Duration, judge: Box<Judge> },
    /// `answer_style: quote`: the sentence of the passages that best answers the question.
    Quoted { quote: Quote, passages: Vec<Hit>, retrieval_time: Duration, judged: Judged, names: SourceNames },
}

/// What judging an answer found: its signals and, with a calibration, the judgement.
#[derive(Debug, Clone, Default)]
pub struct Judged {
    pub signals: Signals,
    pub judgement: Option<Judgement>,
    /// Time spent measuring the answer's signals (after generating).
    pub time: Duration,
}

/// What judging, quoting and withholding a generated answer need.
pub struct Judge {
    settings: Retrieval,
    question: String,
    judging: Judging,
    /// Retrieval signals (the answer's are added to them).
    signals: Signals,
    /// Before-generation judgement, if any.
    before: Option<Judgement>,
    evidence: EvidenceFinder,
    model: Arc<dyn ChatModel>,
    /// The same prompt without passages, for the closed-book likelihood.
    closed_book: Option<lore_core::PromptText>,
}

impl Judge {
    /// Whether the answer is judged before it is shown (then it is not streamed).
    fn withholds_anything(&self) -> bool {
        !self.judging.observe
            && (self.judging.calibration.is_some() || self.settings.answer_style == AnswerStyle::Verified)
    }

    /// Whether anything is measured after generating.
    fn measures(&self) -> bool {
        self.judging.observe || self.withholds_anything() || self.settings.quote_evidence
    }
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
    /// The signals measured and, with a calibration, how sure the answer is.
    pub judged: Judged,
    /// The sources shown with the answer, numbered like its passages.
    pub sources: Vec<SourceRef>,
}

impl Outcome {
    /// The probability that the answer is right, when a calibration judged it.
    pub fn confidence(&self) -> Option<f64> {
        self.judged.judgement.map(|j| j.probability)
    }

    /// What `/metrics` counts of it.
    pub fn figures(&self) -> crate::metrics::Answered {
        crate::metrics::Answered {
            abstained: self.abstained,
            retrieval_time: self.retrieval_time,
            first_token: self.first_token,
            total_time: self.total_time,
            generated_tokens: self.generated_tokens,
        }
    }
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
        // Read once: it is a look at the knowledge base's stored config.
        let kb = chain.kb_language().await;
        let retrieved = chain.retrieve_in(question, reranking, kb).await?;
        let (settings, voice) = chain.voice(chain.answers_in.unwrap_or(kb), kb);
        let judging = chain.judging(reranking);
        self.answer_from(&settings, voice, question, history, retrieved, judging, started.elapsed()).await
    }

    /// Abstains or starts generating from passages already retrieved and reranked.
    #[allow(clippy::too_many_arguments)]
    pub async fn answer_from(
        &self,
        settings: &Retrieval,
        voice: Voice<'_>,
        question: &str,
        history: &[Turn],
        retrieved: Retrieved,
        judging: Judging,
        retrieval_time: Duration,
    ) -> anyhow::Result<Answer> {
        let Retrieved { hits, signals } = retrieved;
        let before =
            judging.calibration.as_ref().and_then(|c| c.judge(Stage::Before, &signals, settings.abstain.threshold));
        let weak = match (&judging.calibration, judging.observe) {
            (_, true) => false,
            // `min_score` stays a floor under a calibration: a question far from anything
            // the knowledge base holds is never answered, however the combiner extrapolates.
            (Some(_), false) => before.is_some_and(|j| j.withholds()) || below_min_score(settings, &hits),
            (None, false) => below_min_score(settings, &hits),
        };
        if weak {
            tracing::info!(
                best = best_similarity(&hits),
                confidence = before.map(|j| j.probability),
                "abstaining: weak evidence"
            );
            let judged = Judged { signals, judgement: before, time: Duration::ZERO };
            let text = abstention(settings, &hits, &judging.names);
            return Ok(Answer::Abstain { text, retrieved: hits, retrieval_time, judged });
        }
        let passages: Vec<Hit> = hits.into_iter().take(settings.passages).collect();
        if settings.answer_style == AnswerStyle::Quote {
            let judged = Judged { signals, judgement: before, time: Duration::ZERO };
            let names = judging.names.clone();
            let quote = match voice.quote_by_words {
                true => EvidenceFinder::best_by_words(question, &passages),
                false => self.evidence.best(question, None, &passages).await?,
            };
            return Ok(match quote {
                Some(quote) => Answer::Quoted { quote, passages, retrieval_time, judged, names },
                None => {
                    let text = abstention(settings, &passages, &names);
                    Answer::Abstain { text, retrieved: passages, retrieval_time, judged }
                }
            });
        }
        let model = self.model.as_ref();
        let prompt = prompt::build(model, voice.template, question, &passages, history, self.max_answer_tokens).await?;
        tracing::debug!(
            prompt_tokens = prompt.tokens,
            passages = prompt.passages.len(),
            turns = prompt.turns_used,
            "generating"
        );
        let generation = self.model.generate(GenerateRequest {
            prompt: prompt.text.clone(),
            max_tokens: self.max_answer_tokens,
            stop: prompt.stop.clone(),
            ignore_eos: false,
            sampling: self.sampling.clone(),
            lora: voice.lora.cloned(),
        })?;
        let closed_book = if judging.costly && (judging.calibration.is_some() || judging.observe) {
            let built = prompt::build(model, voice.template, question, &[], &[], self.max_answer_tokens).await;
            built.ok().map(|p| p.text)
        } else {
            None
        };
        let judge = Box::new(Judge {
            settings: settings.clone(),
            question: question.to_string(),
            judging,
            signals,
            before,
            evidence: self.evidence.clone(),
            model: self.model.clone(),
            closed_book,
        });
        Ok(Answer::Generate { generation, prompt, retrieval_time, judge })
    }
}

/// How a place's answers are written: its prompt template, and the LoRA adapter (its
/// bot's) the generator applies.
#[derive(Clone, Copy)]
pub struct Voice<'a> {
    pub template: &'a Template,
    pub lora: Option<&'a lore_core::LoraAdapter>,
    /// `answer_style: quote` chooses its sentence by the question's words (a language the
    /// embedder does not speak).
    pub quote_by_words: bool,
}

impl<'a> Voice<'a> {
    /// The template, with the base model.
    pub fn of(template: &'a Template) -> Self {
        Self { template, lora: None, quote_by_words: false }
    }
}

fn below_min_score(settings: &Retrieval, hits: &[Hit]) -> bool {
    best_similarity(hits).is_none_or(|b| b < settings.min_score)
}

/// The evidence compared with `min_score`: the best cosine similarity between the question
/// and a retrieved passage. `None` when nothing was retrieved or no retriever knew a
/// similarity: then the bot abstains.
pub fn best_similarity(hits: &[Hit]) -> Option<f32> {
    hits.iter().filter_map(|h| h.similarity).reduce(f32::max)
}

/// What the bot says when it abstains: `abstain_text`, then the hint naming the nearest
/// passage it found (its section, else its first words, and its source), if any.
pub fn abstention(settings: &Retrieval, hits: &[Hit], names: &SourceNames) -> String {
    let Some(nearest) = hits.first().filter(|_| !settings.abstain_hint.trim().is_empty()) else {
        return settings.abstain_text.clone();
    };
    let topic = match &nearest.chunk.section {
        Some(section) => format!("“{section}”"),
        None => {
            let words: Vec<&str> = nearest.chunk.text.split_whitespace().take(8).collect();
            format!("“{}…”", words.join(" "))
        }
    };
    let source = names.refs(std::slice::from_ref(nearest)).remove(0);
    let source = format!("{}, {}", source.source, source.location);
    let hint = settings.abstain_hint.replace("{topic}", &topic).replace("{source}", &source);
    format!("{} {hint}", settings.abstain_text)
}

/// What measuring a generated answer found.
struct Measured {
    judged: Judged,
    /// The verified sentence that best supports the answer.
    quote: Option<Quote>,
    /// A quote holds what the answer says.
    supported: bool,
}

impl Judge {
    /// Measures `answer` (as generated, after `prompt`) against its passages: support,
    /// likelihoods, and the judgement.
    async fn measure(&self, answer: &str, prompt: &prompt::Prompt) -> Measured {
        let started = Instant::now();
        let mut signals = self.signals.clone();
        let passages_text: String =
            prompt.passages.iter().map(|h| h.chunk.text.as_str()).collect::<Vec<_>>().join("\n");
        let cleaned = crate::question::answer_text::clean_answer(answer);
        signals.set(signal::ANSWER_IN_PASSAGES, words_found(&cleaned, &passages_text));
        let span = prompt.passages.iter().any(|h| stands_in(&cleaned, &h.chunk.text));
        signals.set(signal::ANSWER_SPAN, if span { 1.0 } else { 0.0 });
        signals.set(signal::ANSWER_WORDS, (1.0 + content_words(&cleaned).len() as f64).ln());
        let quote = match self.evidence.best(&self.question, Some(&cleaned), &prompt.passages).await {
            Ok(quote) => quote,
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "could not choose the evidence to quote");
                None
            }
        };
        let in_quote = quote.as_ref().map_or(0.0, |q| words_found(&cleaned, &q.sentence));
        signals.set(signal::ANSWER_IN_QUOTE, in_quote);
        signals.set(signal::SUPPORT, quote.as_ref().map_or(-1.0, |q| q.score as f64));
        if let Some(closed) = &self.closed_book {
            // Both passes at once: the engine batches them.
            let (open, closed) = tokio::join!(
                self.model.continuation_logprob(&prompt.text, answer),
                self.model.continuation_logprob(closed, answer)
            );
            if let (Ok(Some(open)), Ok(Some(closed))) = (open, closed) {
                signals.set(signal::LL_OPEN, open);
                signals.set(signal::LL_CLOSED, closed);
                signals.set(signal::LL_GAIN, open - closed);
            }
        }
        let threshold = self.settings.abstain.threshold;
        let after = self.judging.calibration.as_ref().and_then(|c| c.judge(Stage::After, &signals, threshold));
        let judgement = after.or(self.before);
        let supported = quote.is_some() && (in_quote >= 0.5 || after.is_some_and(|j| !j.withholds()));
        Measured { judged: Judged { signals, judgement, time: started.elapsed() }, quote, supported }
    }

    /// Whether the measured answer is withheld.
    fn withholds(&self, measured: &Measured) -> bool {
        if self.judging.observe {
            return false;
        }
        let unsure = self.judging.calibration.is_some() && measured.judged.judgement.is_some_and(|j| j.withholds());
        let unsupported = self.settings.answer_style == AnswerStyle::Verified && !measured.supported;
        unsure || unsupported
    }

    /// What is said instead of a withheld answer, with the sources it cites.
    async fn instead(&self, passages: &[Hit]) -> (String, Vec<SourceRef>, Option<Quote>) {
        if self.settings.abstain.instead == Instead::Quote {
            if let Ok(Some(quote)) = self.evidence.best(&self.question, None, passages).await {
                let text = format!(
                    "I am not sure of the answer. The closest passage [{}] says: “{}”",
                    quote.passage, quote.sentence
                );
                return (text, self.judging.names.refs(passages), Some(quote));
            }
        }
        (abstention(&self.settings, passages, &self.judging.names), Vec::new(), None)
    }
}

/// Streams `answer` into `sink` (or, when it is judged, delivers it whole once judged) and
/// finishes it with sources.
pub async fn respond(answer: Answer, sink: &mut dyn ReplySink) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    match answer {
        Answer::Abstain { text, retrieval_time, judged, .. } => {
            let clock = Clock { started, retrieval_time };
            sink.finish(&text, &[]).await?;
            Ok(Outcome {
                text,
                passages: vec![],
                abstained: true,
                stop: None,
                retrieval_time,
                first_token: None,
                total_time: clock.now(),
                generated_tokens: 0,
                quote: None,
                judged,
                sources: Vec::new(),
            })
        }
        Answer::Quoted { quote, passages, retrieval_time, judged, names } => {
            let clock = Clock { started, retrieval_time };
            let sources = names.refs(&passages);
            sink.finish(&quote.sentence, &sources).await?;
            Ok(Outcome {
                text: quote.sentence.clone(),
                passages,
                abstained: false,
                stop: None,
                retrieval_time,
                first_token: Some(clock.now()),
                total_time: clock.now(),
                generated_tokens: 0,
                quote: Some(quote),
                judged,
                sources,
            })
        }
        Answer::Generate { generation, prompt, retrieval_time, judge } => {
            let clock = Clock { started, retrieval_time };
            let streamed = stream_generation(generation, sink, !judge.withholds_anything(), clock).await?;
            deliver_generated(streamed, prompt, &judge, sink, clock).await
        }
    }
}

/// When an answer began, counted from the question (retrieval included).
#[derive(Clone, Copy)]
struct Clock {
    started: Instant,
    retrieval_time: Duration,
}

impl Clock {
    fn now(&self) -> Duration {
        self.started.elapsed() + self.retrieval_time
    }
}

/// What a generation gave: its text as generated, when its first piece came, how it
/// stopped.
struct Streamed {
    raw: String,
    first_token: Option<Duration>,
    stop: StopReason,
    generated_tokens: usize,
}

/// Reads `generation` to its end, showing each piece in `sink` as it arrives when `stream`
/// (not `Generation::collect`, which waits for the whole).
async fn stream_generation(
    mut generation: Generation,
    sink: &mut dyn ReplySink,
    stream: bool,
    clock: Clock,
) -> anyhow::Result<Streamed> {
    let mut raw = String::new();
    let mut first_token = None;
    while let Some(event) = generation.events.recv().await {
        match event {
            // Not shown: people see their place in the router's line of questions; the
            // engine's own queue also counts reranking jobs.
            Event::Queued { position } => tracing::debug!(position, "generation queued in the engine"),
            Event::Text(piece) => {
                first_token.get_or_insert_with(|| clock.now());
                raw.push_str(&piece);
                let shown = raw.trim_start();
                if stream && !shown.is_empty() {
                    sink.update(shown).await?;
                }
            }
            Event::Done(f) => {
                return Ok(Streamed { raw, first_token, stop: f.reason, generated_tokens: f.generated_tokens })
            }
            Event::Failed(message) => return Err(lore_core::GenerateError::Failed(message).into()),
        }
    }
    // The events ended without Done: the engine stopped mid-answer.
    Err(lore_core::GenerateError::Stopped.into())
}

/// Judges a generated answer and finishes it in `sink`: as generated (with its quote and
/// confidence when the settings show them), or withheld and replaced as `judge` says.
async fn deliver_generated(
    streamed: Streamed,
    prompt: prompt::Prompt,
    judge: &Judge,
    sink: &mut dyn ReplySink,
    clock: Clock,
) -> anyhow::Result<Outcome> {
    let Streamed { raw, first_token, stop, generated_tokens } = streamed;
    let text = raw.trim().to_string();
    let text = if text.is_empty() { "(no answer)".to_string() } else { text };
    // The answer stands without its quote: a failing embedder costs only the quote.
    let measured = if judge.measures() {
        judge.measure(&raw, &prompt).await
    } else {
        Measured {
            judged: Judged { signals: judge.signals.clone(), judgement: judge.before, time: Duration::ZERO },
            quote: None,
            supported: false,
        }
    };
    if judge.withholds(&measured) {
        tracing::info!(
            confidence = measured.judged.judgement.map(|j| j.probability),
            supported = measured.supported,
            "withholding an answer"
        );
        let (shown, sources, quote) = judge.instead(&prompt.passages).await;
        sink.finish(&shown, &sources).await?;
        return Ok(Outcome {
            text: shown,
            passages: if sources.is_empty() { Vec::new() } else { prompt.passages },
            abstained: true,
            stop: Some(stop),
            retrieval_time: clock.retrieval_time,
            first_token,
            total_time: clock.now(),
            generated_tokens,
            quote,
            judged: measured.judged,
            sources,
        });
    }
    let show_quote = judge.settings.quote_evidence || judge.settings.answer_style == AnswerStyle::Verified;
    let mut shown = text.clone();
    if let Some(quote) = measured.quote.as_ref().filter(|_| show_quote) {
        shown = format!("{shown}\n\n{}", quote.shown());
    }
    if let Some(j) = measured.judged.judgement.filter(|_| judge.settings.abstain.show_confidence) {
        shown = format!("{shown}\n(confidence: {})", j.word());
    }
    let sources = judge.judging.names.refs(&prompt.passages);
    sink.finish(&shown, &sources).await?;
    Ok(Outcome {
        text,
        passages: prompt.passages,
        abstained: false,
        stop: Some(stop),
        retrieval_time: clock.retrieval_time,
        first_token,
        total_time: clock.now(),
        generated_tokens,
        quote: measured.quote.filter(|_| show_quote),
        judged: measured.judged,
        sources,
    })
}

/// How sources are named to people: a file relative to its knowledge base's source
/// folder (the longest that holds it), a web page by its address, any other file by its
/// name alone, so the server's own layout is never shown.
#[derive(Debug, Clone, Default)]
pub struct SourceNames {
    roots: Arc<Vec<std::path::PathBuf>>,
}

impl SourceNames {
    /// Names relative to `roots` (a knowledge base's `sources`: folders or files).
    pub fn new(roots: &[std::path::PathBuf]) -> Self {
        let mut roots: Vec<std::path::PathBuf> =
            roots.iter().map(|r| std::fs::canonicalize(r).unwrap_or_else(|_| r.clone())).collect();
        // Longest first: a folder inside another names its files from itself.
        roots.sort_by_key(|r| std::cmp::Reverse(r.as_os_str().len()));
        Self { roots: Arc::new(roots) }
    }

    /// Names for the sources of knowledge base `kb` in `config` (file names only when the
    /// config does not list its folders).
    pub fn of_kb(config: &crate::config::Config, kb: &str) -> Self {
        Self::new(config.knowledge_bases.get(kb).map(|k| k.sources.as_slice()).unwrap_or_default())
    }

    pub fn name(&self, source: &str) -> String {
        if source.contains("://") {
            return source.to_string();
        }
        let path = std::path::Path::new(source);
        let relative = self.roots.iter().find_map(|r| path.strip_prefix(r).ok()).filter(|p| !p.as_os_str().is_empty());
        match relative {
            Some(relative) => relative.display().to_string(),
            None => path.file_name().map_or_else(|| source.to_string(), |n| n.to_string_lossy().into_owned()),
        }
    }

    /// Sources as shown to people: numbered like the prompt's passages.
    pub fn refs(&self, passages: &[Hit]) -> Vec<SourceRef> {
        passages
            .iter()
            .enumerate()
            .map(|(i, h)| SourceRef {
                number: i + 1,
                source: self.name(&h.chunk.source),
                location: h.chunk.location(),
                id: h.chunk.id.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use lore_core::testing::{EchoModel, HashEmbedder};
    use lore_core::Chunk;

    use super::*;

    fn hit(similarity: Option<f32>) -> Hit {
        Hit { chunk: Chunk::new("a.md", 0, 1, 2, "Bees dance.".into()), score: 0.5, similarity, lexical: None }
    }

    const BEES_DANCE: &str = "Bees dance on the comb to show where flowers grow.";

    /// Hits as a retriever found them.
    fn found(hits: Vec<Hit>) -> Retrieved {
        let signals = Signals::of_retrieval(&hits, hits.first().map(|h| h.score), false);
        Retrieved { hits, signals }
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
            let expected = abstention(&settings, &weak, &SourceNames::default());
            let answer = p
                .answer_from(&settings, Voice::of(&t), "How?", &[], found(weak), Judging::default(), Duration::ZERO)
                .await
                .unwrap();
            let outcome = respond(answer, &mut sink).await.unwrap();
            assert!(outcome.abstained);
            assert_eq!(sink.0, vec![format!("finish {expected} sources 0")]);
        }
        assert_eq!(abstention(&settings, &[], &SourceNames::default()), settings.abstain_text, "nothing near: no hint");
        assert_eq!(
            abstention(&settings, &[hit(Some(0.1))], &SourceNames::default()),
            format!(
                "{} The nearest it comes is “Bees dance.…” (a.md, lines 1-2); try asking about that.",
                settings.abstain_text
            )
        );
        let mut sink = Record(vec![]);
        let answer = p
            .answer_from(
                &settings,
                Voice::of(&t),
                "How?",
                &[],
                found(vec![hit(Some(0.8))]),
                Judging::default(),
                Duration::ZERO,
            )
            .await
            .unwrap();
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
            lexical: None,
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
            .answer_from(
                &quoting,
                Voice::of(&t),
                "Where do bees dance?",
                &[],
                found(passages()),
                Judging::default(),
                Duration::ZERO,
            )
            .await
            .unwrap();
        let outcome = respond(answer, &mut sink).await.unwrap();
        let quote = outcome.quote.clone().expect("a quote");
        assert_eq!((quote.sentence.as_str(), quote.passage, quote.location.as_str()), (BEES_DANCE, 2, "line 2"));
        assert_eq!(outcome.text, "They dance [1].", "the answer itself is unchanged");
        let shown = format!("finish They dance [1].\n\nEvidence [2]: “{BEES_DANCE}” sources 2");
        assert_eq!(sink.0.last().unwrap(), &shown);

        let quote_only = Retrieval { answer_style: AnswerStyle::Quote, passages: 2, ..Retrieval::default() };
        let mut sink = Record(vec![]);
        let answer = p
            .answer_from(
                &quote_only,
                Voice::of(&t),
                "Where do bees dance?",
                &[],
                found(passages()),
                Judging::default(),
                Duration::ZERO,
            )
            .await
            .unwrap();
        let outcome = respond(answer, &mut sink).await.unwrap();
        assert_eq!((outcome.text.as_str(), outcome.generated_tokens), (BEES_DANCE, 0));
        assert_eq!(sink.0, vec![format!("finish {BEES_DANCE} sources 2")], "no generation, nothing streamed");
    }
}
