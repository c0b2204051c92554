//! A reply sink that records what a bot would have sent.

use async_trait::async_trait;
use lore_adapters::{ReplySink, SourceRef};

#[derive(Debug, Default, Clone)]
pub struct Capture {
    pub typing: usize,
    pub updates: Vec<String>,
    pub finished: Option<String>,
    pub sources: Vec<SourceRef>,
    pub said: Vec<String>,
}

#[async_trait]
impl ReplySink for Capture {
    async fn typing(&mut self) -> anyhow::Result<()> {
        self.typing += 1;
        Ok(())
    }

    async fn update(&mut self, text_so_far: &str) -> anyhow::Result<()> {
        self.updates.push(text_so_far.to_string());
        Ok(())
    }

    async fn finish(&mut self, text: &str, sources: &[SourceRef]) -> anyhow::Result<()> {
        self.finished = Some(text.to_string());
        self.sources = sources.to_vec();
        Ok(())
    }

    async fn say(&mut self, text: &str) -> anyhow::Result<()> {
        self.said.push(text.to_string());
        Ok(())
    }
}
