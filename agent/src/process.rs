//! What both of the agent crate's binaries (`hearth-agent`, `hearth-fleet-sim`) set up the
//! same way: logging to stderr ([`init_logging`]) and the stop signals, SIGTERM and SIGINT
//! ([`Signals`]).

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

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
/// when `RUST_LOG` is unset, empty or invalid (an invalid one is reported as the first log
/// line). Call once, before anything logs.
///
/// `RUST_LOG` takes comma-separated `level`, `target=level` or bare `target` directives, e.g.
/// `info`, `hearth_agent=debug,info` or `debug,rumqttc=warn`; a target also covers its modules
/// (`hearth_agent` matches `hearth_agent::run`). The span and field filters of
/// `tracing_subscriber::EnvFilter` (`[span{field=value}]`) and its regular expressions are not
/// supported: the agent does not link a regex engine, which keeps its binary and memory small.
pub fn init_logging(format: LogFormat, default_filter: &str) -> Result<(), ProcessError> {
    let (filter, rejected) = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => match parse_filter(&spec) {
            Ok(filter) => (filter, None),
            Err(e) => (parse_filter(default_filter).map_err(ProcessError::Logging)?, Some(e)),
        },
        _ => (parse_filter(default_filter).map_err(ProcessError::Logging)?, None),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Text => registry.with(fmt::layer().with_writer(std::io::stderr)).try_init(),
        LogFormat::Json => registry.with(fmt::layer().json().with_writer(std::io::stderr)).try_init(),
    };
    result.map_err(|e| ProcessError::Logging(e.to_string()))?;
    if let Some(e) = rejected {
        warn!("RUST_LOG ignored, logging with `{default_filter}` instead: {e}");
    }
    Ok(())
}

/// Parses a filter in the agent's `RUST_LOG` syntax (see [`init_logging`]). Empty directives
/// (`info,`) are skipped.
fn parse_filter(spec: &str) -> Result<Targets, String> {
    let directives: Vec<&str> = spec.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
    if directives.is_empty() {
        return Err(format!("no filter directive in `{spec}`"));
    }
    // Targets would take `target[span]` for a target name that never matches; say so instead.
    if let Some(d) = directives.iter().find(|d| d.contains(['[', ']', '{', '}'])) {
        return Err(format!("`{d}`: span and field filters are not supported"));
    }
    directives.join(",").parse().map_err(|e| format!("`{spec}`: {e}"))
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

#[cfg(test)]
mod tests {
    use tracing::level_filters::LevelFilter;

    use super::*;

    #[test]
    fn parses_levels_and_targets() {
        let filter = parse_filter("info").unwrap();
        assert_eq!(filter.default_level(), Some(LevelFilter::INFO));
        assert!(filter.would_enable("rumqttc::state", &tracing::Level::INFO));
        assert!(!filter.would_enable("rumqttc::state", &tracing::Level::DEBUG));

        let filter = parse_filter("hearth_agent=debug, info,").unwrap();
        assert_eq!(filter.default_level(), Some(LevelFilter::INFO));
        assert!(filter.would_enable("hearth_agent::run", &tracing::Level::DEBUG));
        assert!(!filter.would_enable("hearth_agent::run", &tracing::Level::TRACE));
        assert!(!filter.would_enable("rustls::client", &tracing::Level::DEBUG));

        let filter = parse_filter("hearth_agent=debug").unwrap();
        assert!(filter.would_enable("hearth_agent", &tracing::Level::DEBUG));
        assert!(!filter.would_enable("rumqttc", &tracing::Level::ERROR));

        let filter = parse_filter("OFF").unwrap();
        assert!(!filter.would_enable("hearth_agent", &tracing::Level::ERROR));
    }

    #[test]
    fn rejects_what_it_cannot_filter() {
        for spec in ["", " , ", "hearth_agent[run]=debug", "[{appliance_id=x}]=debug", "hearth_agent=loud", "a=b=c"] {
            assert!(parse_filter(spec).is_err(), "{spec:?} accepted");
        }
    }
}
