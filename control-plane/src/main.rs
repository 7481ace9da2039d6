//! The `hearth-control-plane` binary: `serve`, `migrate`, `pki init`, `broker-config`,
//! `intents`, and the operator CLI (`tenant`, `plan`, `key`, `user`, `operator`, `appliance`,
//! including `appliance bulk-create` for load tests).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hearth_control_plane::admin_cli::{
    self, ArtifactCommand, KeyCommand, OperatorCommand, PlanCommand, RolloutCommand, TenantCommand, UserCommand,
};
use hearth_control_plane::broker_config::{self, BrokerConfig};
use hearth_control_plane::config::Config;
use hearth_control_plane::db::audit::{Actor, Recorder};
use hearth_control_plane::{db, domain, pki, serve};
use hearth_protocol::{ApplianceId, TenantId};
use tokio_util::sync::CancellationToken;

/// Hearth's control plane: HTTP API, MQTT ingest and PostgreSQL for a fleet of appliances.
///
/// Configuration: built-in defaults, then the TOML file given with --config, then
/// environment variables HEARTH_<SECTION>__<KEY> (e.g. HEARTH_DATABASE__URL,
/// HEARTH_MQTT__PORT, HEARTH_PKI__DIR). See docs/architecture.md.
#[derive(Debug, Parser)]
#[command(name = "hearth-control-plane", version, propagate_version = true)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "HEARTH_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API, the MQTT consumer and the presence sweeper until SIGTERM/SIGINT.
    Serve {
        /// Apply pending database migrations before starting.
        #[arg(long)]
        migrate: bool,
    },
    /// Apply pending database migrations and exit. Run it as the tables' owner; `serve`
    /// then runs as a login role that owns nothing (see docs/architecture.md).
    Migrate,
    /// The fleet's certificates.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Render the Mosquitto configuration (mosquitto.conf and acl) for this fleet.
    BrokerConfig {
        /// Directory written by `pki init`.
        #[arg(long)]
        pki_dir: PathBuf,
        /// Directory for the rendered files, the broker's log, pid file and persistence.
        #[arg(long)]
        data_dir: PathBuf,
        /// The public listener, for appliances.
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
        /// The public listener's port.
        #[arg(long, default_value_t = broker_config::DEFAULT_PUBLIC_PORT)]
        port: u16,
        /// The internal listener, for the control plane only (trusts only the service CA);
        /// bind it to an address appliances cannot reach.
        #[arg(long, default_value = "127.0.0.1")]
        service_bind: String,
        /// The internal listener's port.
        #[arg(long, default_value_t = broker_config::DEFAULT_SERVICE_PORT)]
        service_port: u16,
        /// The user Mosquitto runs as when started as root (default: the current user).
        #[arg(long)]
        run_as: Option<String>,
        /// Keep retained messages and sessions across broker restarts.
        #[arg(long)]
        persistence: bool,
        /// The CRL file (default: crl.pem in --pki-dir); must be the control plane's `pki.crl_file`.
        #[arg(long)]
        crl_file: Option<PathBuf>,
    },
    /// Customers.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Appliances.
    Appliance {
        #[command(subcommand)]
        command: ApplianceCommand,
    },
    /// Plans: the quotas assigned to tenants.
    Plan {
        #[command(subcommand)]
        command: PlanCommand,
    },
    /// Tenants' API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Tenant users (sign-in with e-mail and password).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Operator tokens for the admin API.
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// Signed agent builds: keygen and sign (offline), upload, list.
    Artifact {
        #[command(subcommand)]
        command: ArtifactCommand,
    },
    /// Fleet rollouts: one change to many appliances, in waves.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Evaluate the support assistant: JSON lines {"id","text"} on stdin, one answer line per input on stdout (one demo appliance, no database).
    Intents(hearth_control_plane::assistant::intents::IntentsArgs),
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Create the fleet CA and the broker's, the API's and the control plane's certificates.
    Init {
        /// Where to write them (keys are written 0600).
        #[arg(long)]
        dir: PathBuf,
        /// DNS name or IP the broker is reached at (repeatable; default localhost, 127.0.0.1, ::1).
        #[arg(long = "broker-name")]
        broker_names: Vec<String>,
        /// DNS name or IP the HTTPS API is reached at (repeatable; default localhost, 127.0.0.1, ::1).
        #[arg(long = "api-name")]
        api_names: Vec<String>,
        /// Replace an existing PKI (every enrolled appliance would need re-enrolling).
        #[arg(long)]
        force: bool,
    },
    /// Start a rotation of the fleet CA (`pki.dir` of the configuration): a new CA signs from
    /// now on, the current one stays trusted until `finish-rotation`; appliances move to
    /// the new CA by renewing. Running control planes follow within seconds.
    RotateCa,
    /// Where the rotation stands: the CAs and how many appliances hold a certificate from each.
    Rotation,
    /// End the rotation: the broker's and the API's certificates are issued again by the new
    /// CA and the old CA is no longer trusted. Refused while appliances depend on the old
    /// CA (they are listed), unless --force.
    FinishRotation {
        /// Cut off the appliances still on the old CA (listed; they come back with
        /// `appliance reenroll`).
        #[arg(long)]
        force: bool,
    },
}

impl From<PkiCommand> for admin_cli::RotationCommand {
    fn from(c: PkiCommand) -> Self {
        match c {
            PkiCommand::RotateCa => admin_cli::RotationCommand::Start,
            PkiCommand::Rotation => admin_cli::RotationCommand::Status,
            PkiCommand::FinishRotation { force } => admin_cli::RotationCommand::Finish { force },
            // Handled before the configuration is read.
            PkiCommand::Init { .. } => unreachable!("pki init needs no configuration"),
        }
    }
}

#[derive(Debug, Subcommand)]
enum ApplianceCommand {
    /// Register an appliance; prints its id and a one-time enrollment token (shown once).
    Create {
        /// The tenant it belongs to (`tenant_id=` of `tenant create`).
        #[arg(long)]
        tenant: TenantId,
        /// Its name, unique within the tenant.
        name: String,
        /// How long the enrollment token stays valid, in hours.
        #[arg(long, default_value_t = 24)]
        ttl_hours: u32,
    },
    /// Revoke an appliance: its certificate goes on the CRL, the broker is told, its
    /// connection is dropped. Not reversible.
    Revoke {
        /// The appliance's id (`appliance_id=` of `appliance create`).
        id: ApplianceId,
    },
    /// A new one-time enrollment token for an existing appliance (one offline past its
    /// certificate's expiry): `hearth-agent enroll --force` with it keeps the appliance's
    /// id, tenant and configuration, and revokes the certificates it held before.
    Reenroll {
        /// The appliance's id.
        id: ApplianceId,
        /// How long the enrollment token stays valid, in hours.
        #[arg(long, default_value_t = 24)]
        ttl_hours: u32,
    },
    /// Replace an appliance's labels (operators' `fleet/` ones included); prints them, one
    /// `key=value` a line. No label clears them all.
    Label {
        /// The appliance's id.
        id: ApplianceId,
        /// `key=value`, as many as needed.
        labels: Vec<String>,
    },
    /// Load tests: register N appliances already enrolled, each with a key and a
    /// certificate from the fleet CA (`pki.dir`), written to one bundle file (0600) for
    /// `hearth-fleet-sim`. Either into one existing tenant or spread over new tenants.
    BulkCreate {
        /// Register them all in this existing tenant.
        #[arg(long, required_unless_present = "tenants", conflicts_with = "tenants")]
        tenant: Option<TenantId>,
        /// Create this many tenants (each with an API key, in the bundle) and spread the
        /// appliances over them.
        #[arg(long)]
        tenants: Option<usize>,
        /// How many appliances to register.
        #[arg(long)]
        count: usize,
        /// Appliance names are <prefix>-000001, …
        #[arg(long, default_value = "sim")]
        prefix: String,
        /// The bundle file to write (0600): ids, keys and certificates, for
        /// `hearth-fleet-sim run --bundle`.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping causes whose text the message already
/// contains (many library errors repeat their source in their own message).
fn report(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let s = cause.to_string();
        if !msg.contains(&s) {
            msg = format!("{msg}: {s}");
        }
    }
    msg
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Pki { command: PkiCommand::Init { dir, broker_names, api_names, force } } => {
            init_logging("warn", "text");
            let mut opts = pki::InitOptions { force, ..Default::default() };
            if !broker_names.is_empty() {
                opts.broker_names = broker_names;
            }
            if !api_names.is_empty() {
                opts.api_names = api_names;
            }
            pki::init(&dir, &opts)?;
            println!("pki_dir={}", dir.display());
            Ok(())
        }
        Command::Pki { command } => {
            let (config, pool) = cli_setup(&cli.config).await?;
            admin_cli::ca_rotation(&pool, &config, command.into()).await
        }
        Command::BrokerConfig {
            pki_dir,
            data_dir,
            bind,
            port,
            service_bind,
            service_port,
            run_as,
            persistence,
            crl_file,
        } => {
            let run_as = run_as.unwrap_or_else(broker_config::current_user);
            let conf = broker_config::render(&BrokerConfig {
                pki_dir,
                data_dir,
                bind,
                port,
                service_bind,
                service_port,
                run_as,
                persistence,
                crl_file,
            })
            .context("cannot write the broker configuration")?;
            println!("mosquitto_conf={}", conf.display());
            Ok(())
        }
        Command::Migrate => {
            let config = Config::load(cli.config.as_deref())?;
            init_logging("info", &config.log.format);
            let pool = db::connect_owner(&config.database).await?;
            db::migrate(&pool).await?;
            tracing::info!("database is up to date");
            Ok(())
        }
        Command::Tenant { command } => {
            let (config, pool) = cli_setup(&cli.config).await?;
            admin_cli::tenant(&pool, &config, command).await
        }
        Command::Plan { command } => {
            let (config, pool) = cli_setup(&cli.config).await?;
            admin_cli::plan(&pool, &config, command).await
        }
        Command::Artifact { command: command @ (ArtifactCommand::Keygen { .. } | ArtifactCommand::Sign { .. }) } => {
            admin_cli::artifact_offline(command)
        }
        Command::Artifact { command } => {
            let (config, pool) = cli_setup(&cli.config).await?;
            admin_cli::artifact(&pool, &config, command).await
        }
        Command::Rollout { command } => {
            let (config, pool) = cli_setup(&cli.config).await?;
            admin_cli::rollout(&pool, &config, command).await
        }
        Command::Key { command } => admin_cli::key(&cli_setup(&cli.config).await?.1, command).await,
        Command::User { command } => admin_cli::user(&cli_setup(&cli.config).await?.1, command).await,
        Command::Operator { command } => admin_cli::operator(&cli_setup(&cli.config).await?.1, command).await,
        Command::Appliance { command: ApplianceCommand::Revoke { id } } => {
            let (config, pool) = cli_setup(&cli.config).await?;
            admin_cli::revoke_appliance(&pool, &config, id).await
        }
        Command::Appliance { command: ApplianceCommand::Create { tenant, name, ttl_hours } } => {
            let (_, pool) = cli_setup(&cli.config).await?;
            let actor = Actor::cli();
            let r = domain::appliances::register(&pool, tenant, &name, Some(ttl_hours), Recorder::new(&actor, None))
                .await
                .map_err(|e| {
                    anyhow::Error::new(e).context(format!("cannot create an appliance for tenant {tenant}"))
                })?;
            print_token(&r)
        }
        Command::Appliance { command: ApplianceCommand::Reenroll { id, ttl_hours } } => {
            let (_, pool) = cli_setup(&cli.config).await?;
            let actor = Actor::cli();
            let r = domain::appliances::reenroll(&pool, id, Some(ttl_hours), Recorder::new(&actor, None))
                .await
                .map_err(|e| anyhow::Error::new(e).context(format!("cannot re-enroll appliance {id}")))?;
            print_token(&r)
        }
        Command::Appliance { command: ApplianceCommand::Label { id, labels } } => {
            let (_, pool) = cli_setup(&cli.config).await?;
            let labels = domain::labels::parse_pairs(&labels.join(","))
                .map_err(|e| anyhow::anyhow!("{}: {}", e.param, e.message))?;
            let actor = Actor::cli();
            let labels = domain::labels::set_for_operator(&pool, id, &labels, Recorder::new(&actor, None))
                .await
                .map_err(|e| anyhow::Error::new(e).context(format!("cannot label appliance {id}")))?;
            for (k, v) in labels {
                println!("{k}={v}");
            }
            Ok(())
        }
        Command::Intents(args) => {
            init_logging("warn", "text");
            Ok(hearth_control_plane::assistant::intents::run(args).await?)
        }
        Command::Appliance { command: ApplianceCommand::BulkCreate { tenant, tenants, count, prefix, out } } => {
            use hearth_control_plane::provision::{self, BulkOptions, Tenants};
            let config = Config::load(cli.config.as_deref())?;
            init_logging("warn", &config.log.format);
            let pool = db::connect(&config.database).await?;
            let started = std::time::Instant::now();
            let tenants = tenant.map_or(Tenants::New(tenants.unwrap_or(1)), Tenants::Existing);
            let opts = BulkOptions { tenants, count, prefix, cert_lifetime: config.appliance_cert_lifetime() };
            let bundle = provision::bulk_create(&pool, &config.pki.dir, &opts).await?;
            provision::write_bundle(&out, &bundle)?;
            println!(
                "appliances={count}\ntenants={}\nbundle={}\nseconds={:.2}",
                bundle.tenants.len(),
                out.display(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Serve { migrate } => {
            let config = Config::load(cli.config.as_deref())?;
            init_logging("info", &config.log.format);
            if migrate {
                let owner = db::connect_owner(&config.database).await?;
                db::migrate(&owner).await?;
                owner.close().await;
            }
            let pool = db::connect(&config.database).await?;
            let shutdown = CancellationToken::new();
            let running = serve::start(&config, pool, shutdown.clone()).await?;
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("shutting down");
                shutdown.cancel();
            });
            // Returns when a signal stopped every part, or with an error naming the part that
            // stopped on its own (the process then exits non-zero and is restarted).
            running.wait().await?;
            Ok(())
        }
    }
}

/// Configuration, logging and the service pool for an operator CLI command.
async fn cli_setup(file: &Option<PathBuf>) -> anyhow::Result<(Config, sqlx::PgPool)> {
    let config = Config::load(file.as_deref())?;
    init_logging("warn", &config.log.format);
    let pool = db::connect(&config.database).await?;
    Ok((config, pool))
}

fn init_logging(default: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// An appliance's id and its one-time enrollment token (shown this once).
fn print_token(r: &domain::appliances::RegisteredAppliance) -> anyhow::Result<()> {
    let expires = r.expires_at.format(&time::format_description::well_known::Rfc3339)?;
    println!("appliance_id={}\nenrollment_token={}\nexpires_at={expires}", r.appliance_id, r.enrollment_token);
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
