//! How log lines are written: text for a person, or JSON for a log shipper (one object a
//! line). What they say, and the span of the question they belong to, is the business of
//! the code that writes them (`question::router::QuestionSpan`).

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The shape of log lines (`--log-format`, `LORE_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text each, for a person (coloured at a terminal).
    #[default]
    Text,
    /// One JSON object a line: `timestamp`, `level`, `target`, the event's fields
    /// (`message` among them) at the top, the innermost span in `span` and every open
    /// span in `spans` (a question's: `bot`, `platform`, `conversation`, `question_id`).
    Json,
}

/// Logs to stderr from now on: `RUST_LOG` if set, else the default filter of `verbose`
/// (0: warnings; 1: info, and debug for Lore's own crates; 2: everything, llama.cpp too).
pub fn init(verbose: u8, format: LogFormat) {
    // llama.cpp's own log lines come with the target `llama-cpp-2`; the crate's events
    // with module paths (`llama_cpp_2::…`): quiet both by default.
    let default = match verbose {
        0 => "warn,lance=error,lance_index=error,lancedb=error,llama-cpp-2=error,llama_cpp_2=error",
        1 => "info,lance=warn,lancedb=warn,lore=debug",
        _ => "debug,llama_cpp_2=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    // Colours only for a person at a terminal: a log file or the journal would keep the
    // escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::registry().with(filter).with(lines(format, std::io::stderr, ansi)).init();
}

/// The layer that writes every event as a line of `format` to `writer`; `ansi` colours text.
pub fn lines<S, W>(format: LogFormat, writer: W, ansi: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Text => layer.with_ansi(ansi).boxed(),
        LogFormat::Json => layer.json().with_ansi(false).flatten_event(true).boxed(),
    }
}

/// Log lines written in a test, to read back: a subscriber that writes `format` at the
/// debug level into the returned buffer (`tracing::subscriber::set_default` it).
#[cfg(test)]
pub(crate) fn captured(format: LogFormat) -> (impl tracing::Subscriber + Send + Sync, LogBuffer) {
    let buffer = LogBuffer::default();
    let subscriber = tracing_subscriber::registry().with(tracing_subscriber::filter::LevelFilter::DEBUG).with(lines(
        format,
        buffer.clone(),
        false,
    ));
    (subscriber, buffer)
}

/// What a [`captured`] subscriber wrote.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl LogBuffer {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[cfg(test)]
impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
impl<'w> MakeWriter<'w> for LogBuffer {
    type Writer = Self;

    fn make_writer(&'w self) -> Self {
        self.clone()
    }
}
