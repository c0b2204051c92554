//! What the routes answer from: [`ApiState`], each part behind a trait or as plain data,
//! so the routes run the same on the daemon's models, router and knowledge bases
//! (`from_app.rs`) and on `lore_core::testing`'s stand-ins in the unit tests (`tests.rs`).
//! Nothing here knows `App`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use lore_core::{ChatModel, Chunk, Embedder, GenerateError, PromptText, Rating, ReplySink, Sampling};
use lore_remote::EndpointState;

use super::AdapterStates;
use crate::question::feedback::{Feedback, FeedbackError, Vote};
use crate::question::line::{Line, Refusal};
use crate::question::pipeline::Outcome;
use crate::question::prompt::Turn;
use crate::question::router::Admitted;

/// Everything the API answers from.
pub(crate) struct ApiState {
    /// Questions to the bots: their names, a place in line, a grounded answer.
    pub(crate) bots: Arc<dyn Bots>,
    /// The generator as a model of its own (its name in `/v1/chat/completions`,
    /// `/v1/completions`, `/tokenize`).
    pub(crate) generator: GeneratorModel,
    /// The embedder, for `/v1/embeddings`.
    pub(crate) embedder: EmbedderModel,
    /// The API keys; none: anyone on this machine may use every model.
    pub(crate) keys: Vec<Key>,
    /// The passages answers cite, for `GET /v1/sources/{id}`.
    pub(crate) sources: Arc<dyn Sources>,
    /// What `/ready` and `/metrics` report of the knowledge bases and engines.
    pub(crate) health: Arc<dyn Health>,
    /// What each bot's platform connection is doing, for `/ready`.
    pub(crate) adapters: AdapterStates,
    /// The kept answers, votes and gold cases (`/v1/feedback`, the quality page); `None`
    /// when the daemon keeps none.
    pub(crate) feedback: Option<Arc<Feedback>>,
}

/// One API key as the server checks it.
pub(crate) struct Key {
    pub(crate) value: String,
    /// Empty: every model.
    pub(crate) bots: Vec<String>,
}

/// Questions to the bots as the API asks them (the daemon's `Router`): the same line and
/// the same answering as the chats'.
#[async_trait]
pub(crate) trait Bots: Send + Sync {
    /// The bots' names, in order.
    fn names(&self) -> Vec<String>;
    /// Whether a bot of this name answers.
    fn has_bot(&self, bot: &str) -> bool;
    /// A place in line for `asker`'s request to `model` (a bot, or the generator itself),
    /// and the question's span, or why there is none now.
    fn admit(&self, model: &str, asker: &str) -> Result<Admitted, Refusal>;
    /// Bot `bot`'s grounded answer to `question` after `history`, once `admitted`'s turn
    /// comes, streamed into `sink`.
    async fn answer_with(
        &self,
        bot: &str,
        admitted: Admitted,
        question: &str,
        history: &[Turn],
        sink: &mut dyn ReplySink,
    ) -> anyhow::Result<Outcome>;
    /// The line questions wait in (its gauges for `/metrics`).
    fn line(&self) -> &Line;
    /// Records `asker`'s vote on `bot`'s answer `id`, replacing their earlier one.
    async fn vote(
        &self,
        bot: &str,
        id: &str,
        asker: &str,
        rating: Rating,
        comment: Option<&str>,
    ) -> Result<Vote, FeedbackError>;
}

/// The generator as a model of its own: no retrieval, the caller's prompt.
pub(crate) struct GeneratorModel {
    /// Its name in `/v1/models`.
    pub(crate) name: String,
    /// The model, run here or on servers (the bots' answers use it too).
    pub(crate) model: Arc<dyn ChatModel>,
    /// What only a model run here does; `None` on servers.
    pub(crate) local: Option<Arc<dyn LocalModel>>,
    /// Tokens a generation gets unless its caller says (and a bot's answer has room for).
    pub(crate) max_answer_tokens: usize,
    /// The configured context: a caller's `max_tokens` is held to half of it.
    pub(crate) context_tokens: usize,
    /// Sampling unless the caller sets its knobs.
    pub(crate) sampling: Sampling,
}

/// What only a generator run here does (`lore_engine::Generator`): its token ids, prompt
/// log-probabilities and KV cache.
#[async_trait]
pub(crate) trait LocalModel: Send + Sync {
    /// The token ids the model reads for `prompt` (`/tokenize`).
    fn tokens(&self, prompt: &PromptText) -> Vec<i32>;
    /// A prompt sent as token ids: control tokens become template parts; ids outside the
    /// vocabulary are refused, in words.
    fn prompt_from_token_ids(&self, ids: &[i64]) -> Result<PromptText, String>;
    /// Each token of `text` with its log-probability after the ones before (`echo`).
    async fn prompt_logprobs(&self, text: &str) -> Result<Vec<(String, Option<f64>)>, GenerateError>;
    /// The KV cache's cells, and those holding tokens now (`/metrics`).
    fn kv_cells(&self) -> (usize, usize);
}

/// The embedder as a model of its own.
pub(crate) struct EmbedderModel {
    /// Its name in `/v1/models`.
    pub(crate) name: String,
    pub(crate) embedder: Arc<dyn Embedder>,
}

/// A stored passage as `GET /v1/sources/{id}` shows it.
pub(crate) struct Passage {
    pub(crate) chunk: Chunk,
    /// Its source, named as answers name it (never the server's absolute path).
    pub(crate) source: String,
}

/// The passages answers cite.
#[async_trait]
pub(crate) trait Sources: Send + Sync {
    /// Passage `id` of the knowledge base bot `bot` answers from through the API; `None`
    /// when it holds no such passage. `bot` is one of [`Bots::names`].
    async fn passage(&self, bot: &str, id: &str) -> anyhow::Result<Option<Passage>>;
}

/// Rows in a knowledge base, or why they could not be counted.
pub(crate) type Rows = Result<usize, String>;

/// What `/ready` and `/metrics` read of the parts the server does not own.
#[async_trait]
pub(crate) trait Health: Send + Sync {
    /// Each bot and the knowledge base it answers from, in the bots' order.
    fn knowledge_bases(&self) -> Vec<(String, String)>;
    /// Each knowledge base's rows by name; cheap however often it is asked.
    async fn rows(&self) -> BTreeMap<String, Rows>;
    /// The generator's servers, when it runs on a pool.
    fn engines(&self) -> Option<Vec<EndpointState>>;
}
