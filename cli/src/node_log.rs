//! A node's log: a tracing filter and an output (standard error or an appended file) in text or
//! JSON lines, set from node.toml's `[log]`, `RUST_LOG` and `--log-format`. Owns reloading on
//! SIGHUP: the filter is re-read and the file reopened (after logrotate moved it), while the
//! format stays what it was at start. It never decides anything about the node.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use cohort_io_mio::node_config::{LogConfig, LogFormat, NodeConfig};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

const DEFAULT_FILTER: &str = "info";

/// Where log lines go: standard error, or a file that can be reopened in place.
#[derive(Clone)]
enum Sink {
    Stderr,
    File(Arc<Mutex<OpenLog>>),
}

struct OpenLog {
    path: PathBuf,
    file: File,
}

fn open_log(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o640).open(path)
}

/// One line's writer: holds the file's lock while tracing writes the line.
enum SinkWriter<'a> {
    Stderr(std::io::Stderr),
    File(MutexGuard<'a, OpenLog>),
}

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            SinkWriter::Stderr(e) => e.write(buf),
            SinkWriter::File(log) => log.file.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            SinkWriter::Stderr(e) => e.flush(),
            SinkWriter::File(log) => log.file.flush(),
        }
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = SinkWriter<'a>;

    fn make_writer(&'a self) -> SinkWriter<'a> {
        match self {
            Sink::Stderr => SinkWriter::Stderr(std::io::stderr()),
            // A poisoned lock only means a thread panicked mid-line: keep logging.
            Sink::File(log) => SinkWriter::File(log.lock().unwrap_or_else(|p| p.into_inner())),
        }
    }
}

/// The running log, kept to reload it.
pub struct NodeLog {
    filter: reload::Handle<EnvFilter, Registry>,
    sink: Sink,
    /// `RUST_LOG` was set at start: it keeps winning over the file's filter.
    env_filter: bool,
}

impl NodeLog {
    /// Starts logging as `config` and `format` (from --log-format) say.
    pub fn init(config: &LogConfig, format: Option<LogFormat>) -> anyhow::Result<NodeLog> {
        let env = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
        let filter = match &env {
            Some(text) => {
                EnvFilter::try_new(text).with_context(|| format!("RUST_LOG `{text}` is not a filter"))?
            }
            None => EnvFilter::try_new(config.filter.as_deref().unwrap_or(DEFAULT_FILTER))?,
        };
        let sink = match &config.file {
            Some(path) => {
                let file = open_log(path)
                    .with_context(|| format!("could not open the log file {}", path.display()))?;
                Sink::File(Arc::new(Mutex::new(OpenLog { path: path.clone(), file })))
            }
            None => Sink::Stderr,
        };
        let ansi = matches!(sink, Sink::Stderr) && std::io::IsTerminal::is_terminal(&std::io::stderr());
        let (filter_layer, handle) = reload::Layer::new(filter);
        let output: Box<dyn Layer<_> + Send + Sync> =
            match format.or(config.format).unwrap_or(LogFormat::Text) {
                LogFormat::Text => {
                    Box::new(tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(sink.clone()))
                }
                LogFormat::Json => Box::new(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_current_span(false)
                        .with_writer(sink.clone()),
                ),
            };
        tracing_subscriber::registry()
            .with(filter_layer)
            .with(output)
            .try_init()
            .context("could not start logging")?;
        Ok(NodeLog { filter: handle, sink, env_filter: env.is_some() })
    }

    /// SIGHUP: re-reads `path` and applies its log filter and file. Says what it did; a file that
    /// no longer loads leaves everything as it was.
    pub fn reload(&self, path: &Path) -> String {
        let config = match NodeConfig::load(path) {
            Ok(config) => config.log,
            Err(e) => return format!("{e}; kept the running log settings"),
        };
        let mut done = Vec::new();
        if self.env_filter {
            done.push("kept the filter from RUST_LOG".to_owned());
        } else {
            let text = config.filter.as_deref().unwrap_or(DEFAULT_FILTER);
            match EnvFilter::try_new(text).map(|f| self.filter.reload(f)) {
                Ok(Ok(())) => done.push(format!("log filter `{text}`")),
                Ok(Err(e)) => done.push(format!("could not apply the filter `{text}`: {e}")),
                Err(e) => done.push(format!("the filter `{text}` is not valid ({e}); kept the running one")),
            }
        }
        match (&self.sink, config.file) {
            (Sink::File(log), Some(path)) => {
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                match open_log(&path) {
                    Ok(file) => {
                        log.file = file;
                        log.path = path;
                        done.push(format!("reopened {}", log.path.display()));
                    }
                    Err(e) => done.push(format!(
                        "could not open {} ({e}); kept {}",
                        path.display(),
                        log.path.display()
                    )),
                }
            }
            (Sink::Stderr, Some(_)) | (Sink::File(_), None) => {
                done.push("a change between standard error and a log file applies at restart".to_owned())
            }
            (Sink::Stderr, None) => {}
        }
        done.join("; ")
    }
}
