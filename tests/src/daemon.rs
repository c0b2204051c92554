//! The whole daemon (`lore run`'s serve loop, real models) behind the real Telegram client
//! and the fake Bot API server.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lore::app::{App, Load};
use lore::ingest::Progress;
use tokio_util::sync::CancellationToken;

use crate::fake_telegram::FakeTelegram;
use crate::models::config;
use crate::wait_until;

const TOKEN: &str = "123456:fake-telegram-token";

pub struct TelegramDaemon {
    pub fake: FakeTelegram,
    pub app: Arc<App>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Knowledge bases with `watch: true`, watched as `lore run` watches them.
    _watchers: lore::service::watch::Watchers,
}

impl TelegramDaemon {
    /// Starts a Telegram bot `docs` answering from `kb`. `config_extra` is appended to the
    /// config (it must define `knowledge_bases`, each with `sources`); `bot_extra` is
    /// appended to the bot's settings (indented four spaces; more bots may follow, indented
    /// two, and `{api}` in it is the fake's URL). Every knowledge base is ingested first.
    pub async fn start(dir: &Path, config_extra: &str, kb: &str, bot_extra: &str) -> Self {
        Self::start_with_models(dir, None, config_extra, kb, bot_extra).await
    }

    /// Like [`TelegramDaemon::start`], with `models` (the `generator:` and `embedder:`
    /// sections, indented two spaces) in place of the default models.
    pub async fn start_with_models(
        dir: &Path,
        models: Option<&str>,
        config_extra: &str,
        kb: &str,
        bot_extra: &str,
    ) -> Self {
        crate::init();
        let fake = FakeTelegram::start(TOKEN).await;
        let extra = bot_config(&fake, config_extra, kb, bot_extra);
        let config = match models {
            Some(models) => crate::models::config_with_models_section(dir, models, &extra),
            None => config(dir, &extra),
        };
        let app = Arc::new(App::load(config, Load::All).await.unwrap());
        for (name, kb) in &app.config.knowledge_bases {
            let settings = lore::ingest::Settings::for_kb(&app.config, name);
            let table = app.kb_for_ingest(name).await.unwrap();
            lore::ingest::ingest(&table, app.embedder.as_ref(), &kb.sources, &settings, Progress::Quiet).await.unwrap();
        }
        Self::serve(fake, app).await
    }

    /// A daemon that serves knowledge bases ingested elsewhere: its config (written to
    /// `dir`) has `data_dir` as given (a folder or an `s3://` URI) and `config_extra`, and it
    /// ingests nothing itself.
    pub async fn start_serving(dir: &Path, data_dir: &str, config_extra: &str, kb: &str) -> Self {
        crate::init();
        let fake = FakeTelegram::start(TOKEN).await;
        let config = crate::models::config_with_data_dir(dir, data_dir, &bot_config(&fake, config_extra, kb, ""));
        let app = Arc::new(App::load(config, Load::All).await.unwrap());
        Self::serve(fake, app).await
    }

    async fn serve(fake: FakeTelegram, app: Arc<App>) -> Self {
        let adapters = lore::service::run::adapter_specs(&app.config).unwrap();
        let watchers = lore::service::watch::start(&app).unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(lore::service::run::run_until(app.clone(), adapters, shutdown.clone()));
        wait_until(Duration::from_secs(10), "the bot registers its commands", || {
            !fake.calls("setMyCommands").is_empty()
        })
        .await;
        Self { fake, app, shutdown, task, _watchers: watchers }
    }

    /// Waits for the daemon to stop by itself, and returns how it ended.
    pub async fn exit(&mut self) -> anyhow::Result<()> {
        tokio::time::timeout(Duration::from_secs(60), &mut self.task)
            .await
            .expect("the daemon stops by itself")
            .unwrap()
    }

    /// Stops the daemon as SIGTERM would and waits for it to finish cleanly.
    pub async fn stop(mut self) {
        self.stop_signal();
        self.exit().await.expect("a clean stop");
    }

    /// Fires what SIGTERM fires, and returns at once.
    pub fn stop_signal(&self) {
        self.shutdown.cancel();
    }
}

/// `config_extra` followed by the bot `docs` on the fake Telegram server, answering from
/// `kb`, with `bot_extra` (`{api}` in it is the fake's URL).
fn bot_config(fake: &FakeTelegram, config_extra: &str, kb: &str, bot_extra: &str) -> String {
    let bot_extra = bot_extra.replace("{api}", &fake.api_url());
    std::env::set_var("LORE_TEST_TELEGRAM_TOKEN", TOKEN);
    format!(
        "{config_extra}bots:\n  docs:\n    knowledge_base: {kb}\n    adapter:\n      type: telegram\n      token_env: LORE_TEST_TELEGRAM_TOKEN\n      api_url: {api}\n      poll_timeout_secs: 2\n      edit_interval_ms: 300\n{bot_extra}",
        api = fake.api_url(),
    )
}

/// The sample knowledge base that ships in `config/sample/`.
pub fn sample_kb() -> String {
    let bees = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/sample/honeybees.md");
    format!("knowledge_bases:\n  bees:\n    sources: [{}]\n", bees.display())
}
