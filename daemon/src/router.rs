//! Where a message enters: every adapter feeds the router, which applies allow-lists,
//! runs commands, picks the channel's knowledge base and hands questions to the pipeline.

use std::collections::BTreeMap;
use std::sync::Arc;

use lore_adapters::{Command, Incoming};

use crate::app::App;
use crate::config::{BotConfig, Retrieval};
use crate::memory::{Memory, ShownSource};
use crate::pipeline::{respond, source_refs, Pipeline, Question};
use crate::prompt::{Template, Turn};

pub struct Router {
    app: Arc<App>,
    pipeline: Pipeline,
    bots: BTreeMap<String, Bot>,
    memory: Memory,
}

struct Bot {
    config: BotConfig,
    template: Template,
    retrieval: Retrieval,
}

impl Router {
    pub fn new(app: Arc<App>) -> anyhow::Result<Self> {
        let mut bots = BTreeMap::new();
        let mut max_turns = 1;
        for name in app.config.bots.keys() {
            let (template, retrieval) = app.bot_settings(Some(name))?;
            let config = app.config.bots[name].clone();
            max_turns = max_turns.max(config.memory_turns);
            bots.insert(name.clone(), Bot { config, template, retrieval });
        }
        let memory = Memory::new(Some(app.config.data_dir.join("conversations")), max_turns);
        Ok(Self { pipeline: app.pipeline(), app, bots, memory })
    }

    /// Handles one message; failures are logged and reported to the user, never fatal.
    pub async fn handle(&self, mut msg: Incoming) {
        let conversation = msg.conversation.to_string();
        if let Err(error) = self.handle_inner(&mut msg).await {
            tracing::warn!(%error, bot = %msg.bot, %conversation, "answer failed");
            let _ = msg.reply.say(&format!("Sorry, I could not answer that: {error}")).await;
        }
    }

    async fn handle_inner(&self, msg: &mut Incoming) -> anyhow::Result<()> {
        let Some(bot) = self.bots.get(&msg.bot) else {
            anyhow::bail!("no bot named {:?}", msg.bot);
        };
        let conv = msg.conversation.to_string();
        if !bot.config.allow.permits(&msg.author.id, &msg.author.roles, &msg.channel) {
            tracing::info!(bot = %msg.bot, user = %msg.author.id, channel = %msg.channel, "refused: not on the allow-list");
            msg.reply.say("Sorry, I only answer people this bot has been set up for.").await?;
            return Ok(());
        }
        let channel = bot.config.channels.get(&msg.channel);
        let kb_name = channel.and_then(|c| c.knowledge_base.clone()).unwrap_or_else(|| bot.config.knowledge_base.clone());
        let retrieval = match channel {
            Some(c) => bot.retrieval.with(&c.retrieval),
            None => bot.retrieval.clone(),
        };
        match msg.command {
            Some(Command::Help) => {
                msg.reply.say(&help_text(&msg.bot)).await?;
                return Ok(());
            }
            Some(Command::Reset) => {
                self.memory.reset(&conv);
                msg.reply.say("Done: I forgot this conversation.").await?;
                return Ok(());
            }
            Some(Command::Kb) => {
                let count = self.app.kb(&kb_name, false).await.ok();
                let size = match count {
                    Some(kb) => format!("{} chunks", kb.count().await.unwrap_or(0)),
                    None => "empty".into(),
                };
                msg.reply.say(&format!("This channel answers from the knowledge base \"{kb_name}\" ({size}).")).await?;
                return Ok(());
            }
            Some(Command::Sources) => {
                let sources = self.memory.last_sources(&conv);
                let text = if sources.is_empty() {
                    "The last answer had no sources.".to_string()
                } else {
                    sources
                        .iter()
                        .map(|s| format!("[{}] {} ({})\n{}", s.number, s.source, s.location, s.text))
                        .collect::<Vec<_>>()
                        .join("\n\n")
                };
                msg.reply.say(&text).await?;
                return Ok(());
            }
            None => {}
        }
        let question = msg.text.trim();
        if question.is_empty() {
            msg.reply.say(&help_text(&msg.bot)).await?;
            return Ok(());
        }
        msg.reply.typing().await?;
        let kb = self.app.kb(&kb_name, false).await?;
        let history = self.memory.turns(&conv);
        let keep = bot.config.memory_turns;
        let history = &history[history.len().saturating_sub(keep)..];
        let answer = self
            .pipeline
            .prepare(Question { text: question, kb: &kb, retrieval: &retrieval, template: &bot.template, history })
            .await?;
        let outcome = respond(answer, msg.reply.as_mut()).await?;
        let shown: Vec<ShownSource> = source_refs(&outcome.passages)
            .into_iter()
            .zip(&outcome.passages)
            .map(|(r, h)| ShownSource { number: r.number, source: r.source, location: r.location, text: h.chunk.text.clone() })
            .collect();
        self.memory.record(&conv, Turn { question: question.to_string(), answer: outcome.text }, shown);
        Ok(())
    }
}

fn help_text(bot: &str) -> String {
    let mut s = format!("I am {bot}. Ask me a question and I will answer from my knowledge base, citing passages like [1].\n");
    for (_, name, what) in Command::ALL {
        s.push_str(&format!("/{name}: {what}\n"));
    }
    s
}
