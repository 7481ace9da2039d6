//! `hearth-fleet-sim`: many simulated appliances in one process (see `hearth_agent::sim`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use hearth_agent::config::LogFormat;
use hearth_agent::process::{init_logging, Signals};
use hearth_agent::sim::count::{run_counter, CountOptions};
use hearth_agent::sim::{run_fleet, FleetOptions, SimError, Snapshot, Stats};
use hearth_agent::AgentConfig;
use hearth_protocol::bundle::Bundle;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Simulates a fleet of Hearth appliances in one process: each with its own certificate
/// and its own mutual-TLS MQTT connection, built by the agent's own connection, heartbeat
/// and backoff code. Tasks are answered without running Ansible. Prints progress on stderr
/// and one JSON line with the figures on stdout.
#[derive(Debug, Parser)]
#[command(name = "hearth-fleet-sim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Connect the bundle's appliances and heartbeat until --duration or SIGINT/SIGTERM.
    Run(Box<RunArgs>),
    /// Count what the broker delivers on every appliance's up topics (the broker's ceiling
    /// for the traffic, with nothing else consuming); uses the control plane's identity, so
    /// `--port` is the broker's internal listener (8884 by default in `broker-config`).
    Count(CountArgs),
}

#[derive(Debug, Args)]
struct Broker {
    /// The broker's host name (it must be in the broker certificate's names).
    #[arg(long, default_value = "localhost")]
    host: String,
    /// The broker's port: its public listener for `run`, its internal one for `count`.
    #[arg(long, default_value_t = 8883)]
    port: u16,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The file written by `hearth-control-plane appliance bulk-create`.
    #[arg(long)]
    bundle: PathBuf,
    #[command(flatten)]
    broker: Broker,
    /// How many of the bundle's appliances to run (default: all).
    #[arg(long)]
    count: Option<usize>,
    /// Heartbeats per second over the whole fleet (sets each appliance's interval to
    /// count / rate); default: every appliance every --heartbeat-interval-s.
    #[arg(long, conflicts_with = "heartbeat_interval_s")]
    rate: Option<f64>,
    /// Each appliance's heartbeat interval (the agent's default is 30 s).
    #[arg(long)]
    heartbeat_interval_s: Option<f64>,
    /// Each interval is drawn from interval × [1 − jitter, 1 + jitter].
    #[arg(long, default_value_t = 0.1)]
    jitter: f64,
    /// Connections started per second.
    #[arg(long, default_value_t = 500.0)]
    ramp: f64,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long)]
    duration: Option<f64>,
    /// Write the counters once a second as JSON lines to this file.
    #[arg(long)]
    timeline: Option<PathBuf>,
    /// Progress on stderr every this many seconds (0: never).
    #[arg(long, default_value_t = 5)]
    progress_every: u64,
    /// Each connection's MQTT keep-alive in seconds (default: the agent's, 30).
    #[arg(long)]
    keep_alive_s: Option<u64>,
    /// First reconnect backoff in milliseconds, doubled per failed attempt with full
    /// jitter (default: the agent's, 1000).
    #[arg(long)]
    backoff_initial_ms: Option<u64>,
    /// Largest reconnect backoff in milliseconds (default: the agent's, 60000).
    #[arg(long)]
    backoff_max_ms: Option<u64>,
    /// Largest reconnect backoff in milliseconds while recovering from the drop of a
    /// healthy connection (default: the agent's, 8000; 60000 with the other defaults is
    /// the policy before it existed).
    #[arg(long)]
    backoff_recovery_max_ms: Option<u64>,
    /// The first connection attempt's timeout in seconds, doubled after each attempt that
    /// timed out (default: the agent's, 10).
    #[arg(long)]
    connect_timeout_s: Option<u64>,
    /// The largest connection timeout in seconds (default: the agent's, 60; equal to
    /// --connect-timeout-s for a fixed timeout).
    #[arg(long)]
    connect_timeout_max_s: Option<u64>,
    /// Skip this many of the bundle's appliances (run the next --count): two simulators
    /// can share one bundle.
    #[arg(long, default_value_t = 0)]
    skip: usize,
    /// Every appliance asks for a new certificate this many seconds after the start (a
    /// renewal storm); without it, only when the control plane sends a renewal notice.
    #[arg(long)]
    renew_after_s: Option<f64>,
    /// This share (0–1) of the appliances fails every task it gets (the same ones every
    /// run, chosen by appliance id): what a rollout's abort criteria are measured against.
    #[arg(long, default_value_t = 0.0)]
    task_failure_share: f64,
}

#[derive(Debug, Args)]
struct CountArgs {
    #[command(flatten)]
    broker: Broker,
    /// The PKI directory (`ca.crt`, `control-plane.crt`, `control-plane.key`).
    #[arg(long)]
    pki_dir: PathBuf,
    /// Seconds to ignore after the first heartbeat arrives (the fleet's ramp).
    #[arg(long, default_value_t = 0.0)]
    skip: f64,
    /// Seconds to count for, after --skip.
    #[arg(long)]
    window: f64,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(LogFormat::Text, "warn") {
        eprintln!("error: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(*args).await,
            Command::Count(args) => count(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The final line of `run`.
#[derive(Debug, Serialize)]
struct RunReport {
    sim: &'static str,
    appliances: usize,
    heartbeat_interval_s: f64,
    offered_heartbeats_per_s: f64,
    ramp_per_s: f64,
    elapsed_s: f64,
    /// Seconds from start until every appliance was connected at once (null: never).
    all_online_after_s: Option<f64>,
    peak_connect_attempts_per_s: u64,
    open_files_limit: u64,
    #[serde(flatten)]
    totals: Snapshot,
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let bundle = Bundle::load(&args.bundle)?;
    let available = bundle.appliances.len().saturating_sub(args.skip);
    let n = args.count.unwrap_or(available);
    if n > available || n == 0 {
        return Err(SimError::TooFew { path: args.bundle.clone(), have: available, wanted: n.max(1) }.into());
    }
    let defaults = AgentConfig::default();
    let interval_s = match (args.rate, args.heartbeat_interval_s) {
        (Some(rate), _) => {
            anyhow::ensure!(
                rate.is_finite() && rate > 0.0,
                "--rate must be a positive number of heartbeats per second"
            );
            n as f64 / rate
        }
        (None, Some(s)) => s,
        (None, None) => defaults.heartbeat_interval_s as f64,
    };
    anyhow::ensure!(interval_s.is_finite() && interval_s > 0.0, "the heartbeat interval must be positive");
    let opts = FleetOptions {
        host: args.broker.host,
        port: args.broker.port,
        heartbeat_interval: Duration::from_secs_f64(interval_s),
        jitter: args.jitter,
        ramp_per_s: args.ramp,
        keep_alive: Duration::from_secs(args.keep_alive_s.unwrap_or(defaults.keep_alive_s)),
        backoff_initial: Duration::from_millis(args.backoff_initial_ms.unwrap_or(defaults.backoff_initial_ms)),
        backoff_max: Duration::from_millis(args.backoff_max_ms.unwrap_or(defaults.backoff_max_ms)),
        backoff_recovery_max: args
            .backoff_recovery_max_ms
            .map_or(hearth_agent::backoff::RECOVERY_MAX, Duration::from_millis),
        connect_timeout: args
            .connect_timeout_s
            .map_or(hearth_agent::backoff::CONNECT_TIMEOUT_INITIAL, Duration::from_secs),
        connect_timeout_max: args
            .connect_timeout_max_s
            .map_or(hearth_agent::backoff::CONNECT_TIMEOUT_MAX, Duration::from_secs),
        renew_after: match args.renew_after_s {
            Some(s) if s.is_finite() && s >= 0.0 => Some(Duration::from_secs_f64(s)),
            Some(_) => anyhow::bail!("--renew-after-s must be a number of seconds, 0 or more"),
            None => None,
        },
        task_failure_share: args.task_failure_share,
    };
    opts.validate()?;
    let open_files = raise_open_files_limit();
    if open_files < n as u64 + 64 {
        eprintln!("warning: the open files limit ({open_files}) is below {n} connections; raise `ulimit -n`");
    }
    let mut timeline = match &args.timeline {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => None,
    };

    // Listen before the fleet starts, so an early signal stops it cleanly.
    let mut signals = Signals::listen()?;
    let stats = Arc::new(Stats::default());
    let stop = CancellationToken::new();
    let started = Instant::now();
    let fleet = {
        let (stats, stop, ca, appliances, opts) = (
            stats.clone(),
            stop.clone(),
            bundle.ca_pem.clone(),
            bundle.appliances[args.skip..args.skip + n].to_vec(),
            opts.clone(),
        );
        tokio::spawn(async move { run_fleet(&ca, &appliances, &opts, stats, stop).await })
    };
    drop(bundle);
    let deadline = args.duration.map(|d| started + Duration::from_secs_f64(d.max(0.0)));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous = Snapshot::default();
    let mut peak_attempts = 0;
    let mut all_online_after = None;
    let mut seconds = 0u64;
    loop {
        tokio::select! {
            _ = signals.recv() => break,
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => break,
            _ = tick.tick() => {}
        }
        let now = stats.snapshot();
        let t = started.elapsed().as_secs_f64();
        peak_attempts = peak_attempts.max(now.connect_attempts - previous.connect_attempts);
        if all_online_after.is_none() && now.online >= n as i64 {
            all_online_after = Some(t);
        }
        if let Some(w) = timeline.as_mut() {
            let line = serde_json::json!({"t": t, "unix_ms": unix_ms(), "snapshot": now});
            let _ = writeln!(w, "{line}").and_then(|()| w.flush());
        }
        if args.progress_every > 0 && seconds % args.progress_every == 0 {
            eprintln!(
                "fleet-sim: t={t:.0}s started={} online={} attempts={} errors={} heartbeats={} (+{}/s) tasks={} configs={} renewed={}",
                now.started,
                now.online,
                now.connect_attempts,
                now.connection_errors,
                now.heartbeats_written,
                now.heartbeats_written - previous.heartbeats_written,
                now.tasks_succeeded + now.tasks_rejected + now.tasks_failed,
                now.configs_applied,
                now.renewed
            );
        }
        seconds += 1;
        previous = now;
    }
    stop.cancel();
    let elapsed_s = started.elapsed().as_secs_f64();
    match tokio::time::timeout(Duration::from_secs(20), fleet).await {
        Ok(Ok(r)) => r?,
        Ok(Err(e)) => anyhow::bail!("the fleet task failed: {e}"),
        Err(_) => eprintln!("warning: not every simulated appliance left within 20 s"),
    }
    let report = RunReport {
        sim: "fleet",
        appliances: n,
        heartbeat_interval_s: interval_s,
        offered_heartbeats_per_s: n as f64 / interval_s,
        ramp_per_s: args.ramp,
        elapsed_s,
        all_online_after_s: all_online_after,
        peak_connect_attempts_per_s: peak_attempts,
        open_files_limit: open_files,
        totals: stats.snapshot(),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn count(args: CountArgs) -> anyhow::Result<()> {
    let read = |name: &str| {
        let p = args.pki_dir.join(name);
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))
    };
    anyhow::ensure!(args.window > 0.0 && args.skip >= 0.0, "--window must be positive and --skip not negative");
    let opts = CountOptions {
        host: args.broker.host,
        port: args.broker.port,
        ca_pem: read("ca.crt")?,
        cert_pem: read("control-plane.crt")?,
        key_pem: read("control-plane.key")?.into(),
        skip: Duration::from_secs_f64(args.skip),
        window: Duration::from_secs_f64(args.window),
    };
    let mut signals = Signals::listen()?;
    let stop = CancellationToken::new();
    let mut counter = tokio::spawn(run_counter(opts, stop.clone()));
    let report = tokio::select! {
        done = &mut counter => done??,
        _ = signals.recv() => {
            stop.cancel();
            counter.await??
        }
    };
    let mut line = serde_json::to_value(&report)?;
    line["sim"] = "count".into();
    println!("{line}");
    Ok(())
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

/// One file descriptor per connection: raise the soft limit to the hard one.
fn raise_open_files_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

#[cfg(test)]
mod cli_tests {
    use clap::CommandFactory;

    /// Every argument (option or positional) and subcommand under `cmd` with no help line,
    /// as "command path: argument".
    fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        let path = if path.is_empty() { cmd.get_name().to_string() } else { format!("{path} {}", cmd.get_name()) };
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.is_hide_set() || id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                out.push(format!("{path}: {}", arg.get_long().map_or_else(|| id.to_string(), |l| format!("--{l}"))));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                out.push(format!("{path} {}: no description", sub.get_name()));
            }
            undocumented(sub, &path, out);
        }
    }

    #[test]
    fn every_subcommand_and_argument_has_a_help_line() {
        let mut cmd = super::Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        undocumented(&cmd, "", &mut missing);
        assert!(missing.is_empty(), "without a help line (add a doc comment):\n{}", missing.join("\n"));
    }
}
