//! What both of the agent crate's binaries (`hearth-agent`, `hearth-fleet-sim`) set up the
//! same way: logging to stderr ([`init_logging`]) and the stop signals, SIGTERM and SIGINT
//! ([`Signals`]).

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::info;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Logging or the signal handlers could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot set up logging: {0}")]
    Logging(String),
    #[error("cannot listen for {signal}: {source}")]
    Signal { signal: &'static str, source: std::io::Error },
}

/// Logs to stderr as `format`, filtered by `RUST_LOG`, or by `default_filter` (e.g. `info`)
/// when `RUST_LOG` is unset or invalid. Call once, before anything logs.
pub fn init_logging(format: LogFormat, default_filter: &str) -> Result<(), ProcessError> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .map_err(|e| ProcessError::Logging(e.to_string()))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| ProcessError::Logging(e.to_string()))
}

/// SIGTERM and SIGINT. From [`listen`](Signals::listen) on they no longer end the process;
/// the program decides what to do with them. Needs a tokio runtime.
#[derive(Debug)]
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Starts listening. Call it before the work the signals are to stop, so an early
    /// signal is not lost.
    pub fn listen() -> Result<Self, ProcessError> {
        let listen = |kind: SignalKind, name: &'static str| {
            signal(kind).map_err(|source| ProcessError::Signal { signal: name, source })
        };
        Ok(Signals {
            term: listen(SignalKind::terminate(), "SIGTERM")?,
            int: listen(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    /// Waits for the next SIGTERM or SIGINT (and logs which). Cancel-safe: it can be a
    /// branch of a `select!` in a loop.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => info!("SIGTERM received"),
            _ = self.int.recv() => info!("SIGINT received"),
        }
    }

    /// Cancels `token` on the first SIGTERM or SIGINT.
    pub async fn cancel_on_signal(mut self, token: CancellationToken) {
        self.recv().await;
        token.cancel();
    }
}
