//! The `hearth-agent` command line: `enroll` once, then `run` as a service.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use hearth_agent::config::AgentConfig;
use hearth_agent::enroll::{enroll, EnrollOptions};
use hearth_agent::process::{init_logging, Signals};
use hearth_agent::update::launch;
use hearth_protocol::Secret;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "hearth-agent",
    version = hearth_agent::VERSION,
    about = "Hearth's appliance agent: enrolls the appliance, then keeps it connected to its fleet.",
    long_about = "Hearth's appliance agent.\n\n\
        Run `hearth-agent enroll` once with a one-time token to obtain the appliance's identity, \
        then `hearth-agent run` as a service. Settings come from defaults, then the configuration \
        file, then HEARTH_AGENT_* environment variables (e.g. HEARTH_AGENT_STATE_DIR, \
        HEARTH_AGENT_HEARTBEAT_INTERVAL_S). Log verbosity follows RUST_LOG (default: info): levels \
        and targets, e.g. RUST_LOG=hearth_agent=debug,info; span and field filters are not supported."
)]
struct Cli {
    /// Configuration file (TOML). Default: /etc/hearth/agent.toml if it exists.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enroll this appliance: make a key pair, exchange a one-time token and a certificate
    /// request for a client certificate, and store the identity in the state directory.
    Enroll(EnrollArgs),
    /// Connect to the broker and stay connected: presence, heartbeats, catalog tasks (run
    /// with ansible-playbook from ansible_dir), desired configuration, reconnects. Stops
    /// cleanly on SIGTERM or SIGINT.
    Run,
}

#[derive(Debug, Args)]
struct EnrollArgs {
    /// The control plane's base URL; must start with https://.
    #[arg(long, value_name = "URL")]
    server: String,
    /// The one-time enrollment token (hearth_et_…) printed by `appliance create`.
    #[arg(long, value_name = "TOKEN")]
    token: Secret<String>,
    /// PEM file with the CA certificate the control plane's HTTPS certificate chains to.
    /// Required: the agent trusts no system certificate store.
    #[arg(long, value_name = "PATH")]
    ca_file: PathBuf,
    /// Where to store the key, certificates and state.toml. Default: `state_dir` from the
    /// configuration (HEARTH_AGENT_STATE_DIR, else /var/lib/hearth-agent).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Replace an existing enrollment in the state directory.
    #[arg(long)]
    force: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes.
            eprintln!("hearth-agent: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    // Configuration errors already name the setting and where its value came from.
    let config = AgentConfig::load(cli.config.as_deref())?;
    init_logging(config.log_format, "info")?;
    if matches!(cli.command, Command::Run) {
        // Before anything else (and before threads): the binary to run may be an updated
        // one, or the previous one again after a failed update.
        launch::launch(&config.state_dir);
    }
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Enroll(args) => enroll_command(config, args).await,
            Command::Run => run_command(config).await,
        }
    })
}

async fn enroll_command(config: AgentConfig, args: EnrollArgs) -> anyhow::Result<()> {
    let state_dir = args.state_dir.unwrap_or(config.state_dir);
    let state = enroll(EnrollOptions {
        server: args.server,
        token: args.token,
        ca_file: Some(args.ca_file),
        state_dir,
        force: args.force,
    })
    .await?;
    println!("enrolled as appliance {}; broker {}:{}", state.appliance_id, state.broker_host, state.broker_port);
    println!("identity stored in {}", state.dir.display());
    Ok(())
}

async fn run_command(config: AgentConfig) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    // Listen before connecting, so an early SIGTERM is not fatal.
    let signals = tokio::spawn(Signals::listen()?.cancel_on_signal(shutdown.clone()));
    let result = hearth_agent::run::run(config.clone(), shutdown.clone()).await;
    signals.abort();
    result?;
    // An agent update installed a new version: restart into it (through the installed
    // binary, which counts the new version's starts).
    if !shutdown.is_cancelled() {
        if let Some(err) = launch::restart_if_switched(&config.state_dir) {
            return Err(err).context("cannot restart into the new agent version");
        }
    }
    tracing::info!("stopped");
    Ok(())
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
