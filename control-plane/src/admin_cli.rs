//! The operator CLI (`hearth-control-plane tenant|plan|key|user|operator|pki|rollout|artifact …`): the admin
//! API's ground for scripts and first set-up, straight against the database. It calls the
//! same operations as the admin API (`crate::domain`), so the rules (name lengths, quotas,
//! the audit actions, the last owner, revocation on delete) are the API's. Every change is
//! audited with actor `cli` (and the OS user). Output is `key=value` lines (secrets shown
//! once) or, for lists, one JSON object per line.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use hearth_protocol::{ApiKeyId, ApplianceId, OperatorId, PlanId, RolloutId, TenantId};
use serde_json::json;
use sqlx::PgPool;

use crate::config::Config;
use crate::db::audit::{Actor, Recorder};
use crate::db::plans::{self as plan_rows, Quotas};
use crate::db::tenants::Changes;
use crate::domain::accounts::{self, AccountError, NewUser};
use crate::domain::operator_accounts;
use crate::domain::operators::{self, OperatorError};
use crate::domain::plans::{self, NewPlan, PlanError};
use crate::domain::rollouts::{self, NewRollout, RolloutError, Steer, Who};
use crate::domain::tenants::{self, TenantError};
use crate::domain::Wake;
use crate::domain::{appliances, labels};
use crate::model::{FleetStatus, OperatorRole, RolloutState, TenantStatus, UserRole};
use crate::pki::SharedCa;
use crate::revocation::Revoker;

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant; prints its id and its first API key (shown once).
    Create {
        /// The tenant's name (the household or customer; need not be unique).
        name: String,
        /// Plan name (default: none, the configured `limits.*` apply).
        #[arg(long)]
        plan: Option<String>,
    },
    /// List tenants (JSON lines), optionally those whose name contains TEXT.
    List {
        /// Only tenants whose name contains this text (case-insensitive).
        #[arg(long, value_name = "TEXT")]
        search: Option<String>,
    },
    /// Suspend a tenant: its keys, sign-ins and appliances are refused until reactivated.
    Suspend {
        /// The tenant's id (`tenant_id=` of `tenant create`, `id` of `tenant list`).
        id: TenantId,
    },
    /// Reactivate a suspended tenant.
    Activate {
        /// The tenant's id.
        id: TenantId,
    },
    /// Put a tenant on a plan (`--none`: the configured default quotas).
    SetPlan {
        /// The tenant's id.
        id: TenantId,
        /// The plan's name (see `plan list`).
        #[arg(required_unless_present = "none")]
        plan: Option<String>,
        /// Take the tenant off any plan: the configured `limits.*` apply.
        #[arg(long, conflicts_with = "plan")]
        none: bool,
    },
    /// Delete a tenant and everything it owns; its appliances are revoked first (CRL).
    Delete {
        /// The tenant's id.
        id: TenantId,
        /// Required: this cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Create a plan; quotas not given take the configured `limits.*` defaults.
    Create {
        /// The plan's name, unique (tenants are put on it by name).
        name: String,
        /// API requests a minute per tenant, sustained.
        #[arg(long)]
        api_per_minute: Option<i32>,
        /// API requests a tenant may make at once, above the sustained rate.
        #[arg(long)]
        api_burst: Option<i32>,
        /// Support assistant messages an hour per tenant, sustained.
        #[arg(long)]
        assistant_per_hour: Option<i32>,
        /// Support assistant messages at once, above the sustained rate.
        #[arg(long)]
        assistant_burst: Option<i32>,
        /// MQTT messages a minute per appliance that count against its allowance
        /// (heartbeats, configuration and certificate requests; status messages and task
        /// traffic never count).
        #[arg(long)]
        mqtt_per_minute: Option<i32>,
        /// Such MQTT messages an appliance may send at once.
        #[arg(long)]
        mqtt_burst: Option<i32>,
        /// Rollouts a tenant may have scheduled, running, paused or waiting at once.
        #[arg(long)]
        rollouts_active: Option<i32>,
        /// Webhook endpoints a tenant may register.
        #[arg(long)]
        webhook_endpoints: Option<i32>,
    },
    /// List plans (JSON lines).
    List,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Issue an API key for a tenant (shown once).
    Issue {
        /// The tenant's id.
        #[arg(long)]
        tenant: TenantId,
        /// A name for the key, to tell it from the tenant's others.
        #[arg(default_value = "default")]
        name: String,
    },
    /// Revoke one of a tenant's API keys.
    Revoke {
        /// The tenant's id.
        #[arg(long)]
        tenant: TenantId,
        /// The key's id (`key_id=` of `key issue`, `id` of `key list`).
        id: ApiKeyId,
    },
    /// List a tenant's API keys (JSON lines; prefixes only).
    List {
        /// The tenant's id.
        #[arg(long)]
        tenant: TenantId,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a tenant user; the password is read from the first line of standard input.
    Create {
        /// The tenant's id.
        #[arg(long)]
        tenant: TenantId,
        /// The user's e-mail address, which they sign in with.
        #[arg(long)]
        email: String,
        /// owner or member.
        #[arg(long, default_value = "owner")]
        role: UserRole,
    },
}

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Issue an operator token (shown once) with a role: admin, support or viewer.
    Create {
        /// Who the token is for (shown in the audit trail).
        name: String,
        /// admin, support or viewer.
        #[arg(long, default_value = "admin")]
        role: OperatorRole,
    },
    /// List operator tokens (JSON lines).
    List,
    /// Revoke an operator token.
    Revoke {
        /// The token's id (`operator_id=` of `operator create`, `id` of `operator list`).
        id: OperatorId,
    },
    /// Operator accounts: who signs in to the web console (password, optional TOTP).
    Account {
        #[command(subcommand)]
        command: OperatorAccountCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum OperatorAccountCommand {
    /// Create an account; prints `account_id=` and, unless `--password-stdin`, the
    /// password chosen for it (`password=`, shown this once).
    Create {
        /// The sign-in name (unique).
        name: String,
        /// admin, support or viewer.
        #[arg(long, default_value = "viewer")]
        role: OperatorRole,
        /// Read the password (at least 12 characters) from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the accounts (JSON lines; never passwords or TOTP keys).
    List,
    /// Disable an account: it cannot sign in and its sessions end.
    Disable {
        /// The account's id (`account_id=` of `operator account create`).
        id: OperatorId,
    },
}

fn json_line<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

/// A plan's id by name (the CLI takes names).
async fn plan_named(pool: &PgPool, name: &str) -> anyhow::Result<PlanId> {
    plan_rows::id_by_name(pool, name).await?.with_context(|| format!("no plan named {name:?}"))
}

/// A tenant operation's error as the CLI says it (naming the tenant it did not find).
fn tenant_error(e: TenantError, id: Option<TenantId>) -> anyhow::Error {
    match (e, id) {
        (TenantError::NotFound, Some(id)) => anyhow::anyhow!("no tenant with id {id}"),
        (e, _) => anyhow::Error::new(e),
    }
}

pub async fn tenant(pool: &PgPool, config: &Config, cmd: TenantCommand) -> anyhow::Result<()> {
    let actor = Actor::cli();
    let audit = Recorder::new(&actor, None);
    // The dispatcher runs in `serve`; it looks for work every second without being woken.
    let wake = Wake::default();
    match cmd {
        TenantCommand::Create { name, plan } => {
            let plan = match plan {
                Some(p) => Some(plan_named(pool, &p).await?),
                None => None,
            };
            let mut tx = pool.begin().await?;
            let t = tenants::create_in(&mut tx, &name, plan, audit)
                .await
                .map_err(|e| tenant_error(e, None).context("cannot create the tenant"))?;
            let key =
                tenants::issue_key_in(&mut tx, t.id, "default", audit).await.map_err(|e| tenant_error(e, None))?;
            tx.commit().await?;
            println!("tenant_id={}\napi_key={}", t.id, key.key);
        }
        TenantCommand::List { search } => {
            let mut after = None;
            loop {
                let page = tenants::list(pool, search.as_deref(), None, after, 500).await?;
                for t in &page {
                    json_line(t)?;
                }
                match page.last() {
                    Some(t) if page.len() == 500 => after = Some(t.tenant.id),
                    _ => break,
                }
            }
        }
        TenantCommand::Suspend { id } | TenantCommand::Activate { id } => {
            let status = if matches!(cmd, TenantCommand::Suspend { .. }) {
                TenantStatus::Suspended
            } else {
                TenantStatus::Active
            };
            let changes = Changes { status: Some(status), ..Default::default() };
            tenants::update(pool, &wake, id, changes, audit).await.map_err(|e| tenant_error(e, Some(id)))?;
            println!("tenant_id={id}\nstatus={status}");
        }
        TenantCommand::SetPlan { id, plan, none: _ } => {
            let plan_id = match plan {
                Some(p) => Some(plan_named(pool, &p).await?),
                None => None,
            };
            let changes = Changes { plan: Some(plan_id), ..Default::default() };
            tenants::update(pool, &wake, id, changes, audit).await.map_err(|e| tenant_error(e, Some(id)))?;
            println!("tenant_id={id}\nplan_id={}", plan_id.map(|p| p.to_string()).unwrap_or_default());
        }
        TenantCommand::Delete { id, yes } => {
            anyhow::ensure!(yes, "deleting a tenant cannot be undone; pass --yes");
            let revoker = revoker(pool, config)?;
            let deleted = tenants::delete(pool, &revoker, id, audit).await.map_err(|e| tenant_error(e, Some(id)))?;
            println!("tenant_id={id}\ndeleted=true\nrevoked_appliances={}", deleted.revoked_appliances.len());
            anyhow::ensure!(deleted.enforced, NOT_ENFORCED);
        }
    }
    Ok(())
}

/// What the CLI says when a recorded revocation could not be made to bite at once.
const NOT_ENFORCED: &str = "the revocation is recorded (the control plane refuses the appliances and lists them on \
                            the next CRL it issues, at its next start at the latest), but the CRL could not be \
                            published or the appliances disconnected now";

/// The CLI's [`Revoker`]: it has the same PKI and broker settings as `serve`.
fn revoker(pool: &PgPool, config: &Config) -> anyhow::Result<Revoker> {
    let ca = SharedCa::load(&config.pki.dir).context("setting `pki.dir`: the CA cannot be loaded")?;
    Ok(Revoker::new(config, pool.clone(), std::sync::Arc::new(ca))?)
}

/// `appliance revoke ID`.
pub async fn revoke_appliance(pool: &PgPool, config: &Config, id: ApplianceId) -> anyhow::Result<()> {
    let actor = Actor::cli();
    let r = appliances::revoke_appliance(pool, Recorder::new(&actor, None), id)
        .await?
        .with_context(|| format!("no appliance with id {id}"))?;
    let bite = async { anyhow::Ok(revoker(pool, config)?.enforce(&[id]).await?) };
    bite.await.context(NOT_ENFORCED)?;
    println!("appliance_id={id}\nrevoked=true\ncertificate_serial={}", r.serial.unwrap_or_default());
    Ok(())
}

pub async fn plan(pool: &PgPool, config: &Config, cmd: PlanCommand) -> anyhow::Result<()> {
    match cmd {
        PlanCommand::Create {
            name,
            api_per_minute,
            api_burst,
            assistant_per_hour,
            assistant_burst,
            mqtt_per_minute,
            mqtt_burst,
            rollouts_active,
            webhook_endpoints,
        } => {
            let d = Quotas::from(config.limits);
            let quotas = Quotas {
                api_per_minute: api_per_minute.unwrap_or(d.api_per_minute),
                api_burst: api_burst.unwrap_or(d.api_burst),
                assistant_per_hour: assistant_per_hour.unwrap_or(d.assistant_per_hour),
                assistant_burst: assistant_burst.unwrap_or(d.assistant_burst),
                mqtt_per_minute: mqtt_per_minute.unwrap_or(d.mqtt_per_minute),
                mqtt_burst: mqtt_burst.unwrap_or(d.mqtt_burst),
                rollouts_active: rollouts_active.unwrap_or(d.rollouts_active),
                webhook_endpoints: webhook_endpoints.unwrap_or(d.webhook_endpoints),
            };
            let actor = Actor::cli();
            let new = NewPlan { name: name.clone(), quotas };
            let p = plans::create(pool, new, Recorder::new(&actor, None)).await.map_err(|e| match e {
                PlanError::NameTaken => anyhow::anyhow!("a plan named {name:?} exists already"),
                PlanError::Invalid(i) if i.param != "name" => {
                    anyhow::anyhow!("--{} must be at least 1", i.param.replace('_', "-"))
                }
                PlanError::Invalid(i) => anyhow::anyhow!("{}", i.message),
                e => anyhow::Error::new(e),
            })?;
            println!("plan_id={}", p.id);
        }
        PlanCommand::List => {
            for p in plans::list(pool).await? {
                json_line(&p)?;
            }
        }
    }
    Ok(())
}

pub async fn key(pool: &PgPool, cmd: KeyCommand) -> anyhow::Result<()> {
    let actor = Actor::cli();
    let audit = Recorder::new(&actor, None);
    match cmd {
        KeyCommand::Issue { tenant, name } => {
            let issued =
                tenants::issue_key(pool, tenant, &name, audit).await.map_err(|e| tenant_error(e, Some(tenant)))?;
            println!("key_id={}\napi_key={}", issued.info.id, issued.key);
        }
        KeyCommand::Revoke { tenant, id } => {
            tenants::revoke_key(pool, tenant, id, audit).await.map_err(|e| match e {
                TenantError::KeyNotFound => anyhow::anyhow!("tenant {tenant} has no key {id}"),
                e => anyhow::Error::new(e),
            })?;
            println!("key_id={id}\nrevoked=true");
        }
        KeyCommand::List { tenant } => {
            for k in tenants::list_keys(pool, tenant).await.map_err(|e| tenant_error(e, Some(tenant)))? {
                json_line(&k)?;
            }
        }
    }
    Ok(())
}

pub async fn user(pool: &PgPool, cmd: UserCommand) -> anyhow::Result<()> {
    let UserCommand::Create { tenant, email, role } = cmd;
    let mut password = String::new();
    std::io::stdin().lock().read_line(&mut password).context("cannot read the password from standard input")?;
    let password = password.trim_end_matches(['\r', '\n']).to_owned();
    let actor = Actor::cli();
    let new = NewUser { email: email.clone(), password, role };
    let u = accounts::create_user(pool, tenant, new, Recorder::new(&actor, None)).await.map_err(|e| match e {
        AccountError::TenantNotFound => anyhow::anyhow!("no tenant with id {tenant}"),
        AccountError::EmailTaken => anyhow::anyhow!("an account for {email} exists already"),
        e => anyhow::Error::new(e),
    })?;
    println!("user_id={}", u.id);
    Ok(())
}

pub async fn operator(pool: &PgPool, cmd: OperatorCommand) -> anyhow::Result<()> {
    let actor = Actor::cli();
    let audit = Recorder::new(&actor, None);
    match cmd {
        OperatorCommand::Create { name, role } => {
            let issued = operators::create(pool, &name, role, audit).await?;
            println!("operator_id={}\noperator_token={}", issued.info.id, issued.token);
        }
        OperatorCommand::List => {
            for o in operators::list(pool).await? {
                json_line(&o)?;
            }
        }
        OperatorCommand::Revoke { id } => {
            operators::revoke(pool, id, audit).await.map_err(|e| match e {
                OperatorError::NotFound => anyhow::anyhow!("no operator token {id}"),
                e => anyhow::Error::new(e),
            })?;
            println!("operator_id={id}\nrevoked=true");
        }
        OperatorCommand::Account { command } => operator_account(pool, command, audit).await?,
    }
    Ok(())
}

async fn operator_account(pool: &PgPool, cmd: OperatorAccountCommand, audit: Recorder<'_>) -> anyhow::Result<()> {
    match cmd {
        OperatorAccountCommand::Create { name, role, password_stdin } => {
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                Some(line.trim_end_matches(['\r', '\n']).to_string())
            } else {
                None
            };
            let created = operator_accounts::create(pool, &name, role, password.as_deref(), audit).await?;
            println!("account_id={}\nname={}\nrole={}", created.account.id, created.account.name, role.as_str());
            if let Some(p) = created.password {
                println!("password={p}");
            }
        }
        OperatorAccountCommand::List => {
            for a in operator_accounts::list(pool).await? {
                json_line(&a)?;
            }
        }
        OperatorAccountCommand::Disable { id } => {
            operator_accounts::disable(pool, id, audit).await?;
            println!("account_id={id}\ndisabled=true");
        }
    }
    Ok(())
}

/// `pki rotate-ca | rotation | finish-rotation`.
#[derive(Debug, Clone, Copy)]
pub enum RotationCommand {
    Start,
    Status,
    Finish { force: bool },
}

pub async fn ca_rotation(pool: &PgPool, config: &Config, command: RotationCommand) -> anyhow::Result<()> {
    use crate::domain::ca_rotation::{self, RotationError};
    let revoker = revoker(pool, config)?;
    let actor = Actor::cli();
    let status = match command {
        RotationCommand::Status => ca_rotation::status(&revoker, pool).await?,
        RotationCommand::Start => ca_rotation::start(&revoker, pool, Recorder::new(&actor, None)).await?,
        RotationCommand::Finish { force } => {
            match ca_rotation::finish(&revoker, pool, Recorder::new(&actor, None), force).await {
                Ok(done) => {
                    println!(
                        "retired_ca={}\nsigning_ca={}\ncut_off={}",
                        done.retired_ca, done.signing_ca.sha256, done.cut_off
                    );
                    for a in &done.cut_off_appliances {
                        println!("{}", serde_json::to_string(a)?);
                    }
                    return Ok(());
                }
                Err(RotationError::Dependents { count, appliances }) => {
                    for a in &appliances {
                        println!("{}", serde_json::to_string(a)?);
                    }
                    anyhow::bail!(
                        "{count} appliance(s) still hold a certificate from the retiring CA (listed above, at most {}); \
                         wait until they renew (`pki rotation`), or pass --force to cut them off",
                        ca_rotation::LISTED_DEPENDENTS
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    println!(
        "rotating={}\nstarted_at={}\nsigning_ca={}\nretiring_ca={}\nappliances_on_signing_ca={}\nappliances_on_other_ca={}\nappliances_on_other_ca_online={}",
        status.rotating,
        status.started_at.unwrap_or_default(),
        status.signing_ca.sha256,
        status.retiring_ca.map(|c| c.sha256).unwrap_or_default(),
        status.appliances_on_signing_ca,
        status.appliances_on_other_ca,
        status.appliances_on_other_ca_online,
    );
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Create a rollout of a catalog task (`--action`, `--params`), a configuration overlay
    /// (`--config`) or an agent update (`--update-to VERSION`) to the appliances the selector flags match (none: every appliance);
    /// prints its id and state. The advancer of a running control plane carries it out.
    Create(Box<NewRolloutArgs>),
    /// List rollouts (JSON lines), newest first, optionally in one state.
    List {
        /// Only rollouts in this state.
        #[arg(long)]
        state: Option<RolloutState>,
    },
    /// One rollout with its progress (JSON).
    Show {
        /// The rollout's id (`id=` of `rollout create`).
        id: RolloutId,
    },
    /// Start nothing new (what runs finishes).
    Pause {
        /// The rollout's id.
        id: RolloutId,
    },
    /// Continue a paused rollout.
    Resume {
        /// The rollout's id.
        id: RolloutId,
    },
    /// Open the next wave of a rollout waiting for approval.
    Approve {
        /// The rollout's id.
        id: RolloutId,
    },
    /// Stop for good: what has not reached an appliance is cancelled.
    Cancel {
        /// The rollout's id.
        id: RolloutId,
    },
}

/// `rollout create`'s arguments.
#[derive(Debug, clap::Args)]
pub struct NewRolloutArgs {
    /// The rollout's name, for people (need not be unique).
    pub name: String,
    /// A catalog action, e.g. `dns.forwarder.set`.
    #[arg(long, required_unless_present_any = ["config", "update_to"], conflicts_with_all = ["config", "update_to"])]
    pub action: Option<String>,
    /// The action's parameters, a JSON object.
    #[arg(long, default_value = "{}", requires = "action")]
    pub params: String,
    /// A configuration overlay, a JSON object merged into each desired document.
    #[arg(long, conflicts_with = "update_to")]
    pub config: Option<String>,
    /// Update the agent to this version (its signed builds must have been uploaded).
    #[arg(long, value_name = "VERSION")]
    pub update_to: Option<String>,
    /// With --update-to: install even where the running version is newer.
    #[arg(long, requires = "update_to")]
    pub allow_downgrade: bool,
    /// Only this tenant's appliances (repeat for more).
    #[arg(long)]
    pub tenant: Vec<TenantId>,
    /// Only appliances of tenants on this plan, by name (repeat for more).
    #[arg(long)]
    pub plan: Vec<String>,
    /// Only appliances carrying this label, `key=value` (repeat: all of them).
    #[arg(long)]
    pub label: Vec<String>,
    /// Only appliances running this agent version (repeat for more).
    #[arg(long)]
    pub agent_version: Vec<String>,
    /// Only appliances in this state: online, offline, never_seen (repeat for more).
    #[arg(long)]
    pub status: Vec<FleetStatus>,
    /// Only this appliance (repeat for more).
    #[arg(long)]
    pub appliance: Vec<ApplianceId>,
    /// The whole policy as JSON (see the API's `policy`); default: 1/10/50/100 % waves,
    /// a 100 % gate, abort above 10 % failures of at least 10.
    #[arg(long)]
    pub policy: Option<String>,
    /// Cumulative wave percentages, e.g. `1,10,50,100` (replaces the policy's waves).
    #[arg(long)]
    pub waves: Option<String>,
    /// Keep taking appliances that match later.
    #[arg(long)]
    pub dynamic: bool,
    /// Start no earlier than this (RFC 3339).
    #[arg(long)]
    pub start_at: Option<String>,
}

fn json_arg(flag: &str, text: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(text).with_context(|| format!("--{flag} is not valid JSON"))
}

/// A rollout operation's error as the CLI says it (naming the field a 422 would name).
fn rollout_error(e: RolloutError) -> anyhow::Error {
    match e {
        RolloutError::Invalid(i) => anyhow::anyhow!("{}: {}", i.param, i.message),
        e => anyhow::Error::new(e),
    }
}

pub async fn rollout(pool: &PgPool, config: &Config, cmd: RolloutCommand) -> anyhow::Result<()> {
    let actor = Actor::cli();
    let audit = Recorder::new(&actor, None);
    let steer = |id, what| async move {
        let v = rollouts::steer(pool, Who::Operator, id, what, audit).await.map_err(rollout_error)?;
        println!("id={}\nstate={}", v.id, v.state);
        anyhow::Ok(())
    };
    match cmd {
        RolloutCommand::Create(args) => {
            let NewRolloutArgs {
                name,
                action,
                params,
                config: overlay,
                update_to,
                allow_downgrade,
                tenant,
                plan,
                label,
                agent_version,
                status,
                appliance,
                policy,
                waves,
                dynamic,
                start_at,
            } = *args;
            let payload = match (action, overlay, update_to) {
                (Some(action), _, _) => json!({ "task": { "action": action, "params": json_arg("params", &params)? } }),
                (None, Some(c), _) => json!({ "config": json_arg("config", &c)? }),
                (None, None, Some(v)) => {
                    json!({ "agent_update": { "version": v, "allow_downgrade": allow_downgrade } })
                }
                (None, None, None) => anyhow::bail!("give --action, --config or --update-to"),
            };
            let mut plans = Vec::new();
            for p in &plan {
                plans.push(plan_named(pool, p).await?);
            }
            let labels =
                labels::parse_pairs(&label.join(",")).map_err(|e| anyhow::anyhow!("--label: {}", e.message))?;
            let mut policy = match policy {
                Some(p) => json_arg("policy", &p)?,
                None => json!({}),
            };
            if let Some(w) = waves {
                let list = w
                    .split(',')
                    .map(|x| x.trim().parse::<f64>())
                    .collect::<Result<Vec<_>, _>>()
                    .context("--waves: give percentages separated by commas, e.g. 1,10,50,100")?;
                policy["waves"] = json!({ "percent": list });
            }
            let body = json!({
                "name": name,
                "payload": payload,
                "policy": policy,
                "dynamic": dynamic,
                "start_at": start_at,
                "selector": {
                    "tenants": tenant, "plans": plans, "labels": labels, "agent_versions": agent_version,
                    "statuses": status, "appliances": appliance,
                },
            });
            let new: NewRollout = serde_json::from_value(body).context("the rollout does not read")?;
            let v = rollouts::create(pool, &config.tasks, config.limits, Who::Operator, new, audit)
                .await
                .map_err(rollout_error)?;
            println!("id={}\nstate={}", v.id, v.state);
            Ok(())
        }
        RolloutCommand::List { state } => {
            let mut after = None;
            loop {
                let page = rollouts::list(pool, Who::Operator, state, after, 100).await.map_err(rollout_error)?;
                for r in &page.rollouts {
                    json_line(r)?;
                }
                match page.next_after {
                    Some(n) => after = Some(n),
                    None => return Ok(()),
                }
            }
        }
        RolloutCommand::Show { id } => {
            let v = rollouts::get(pool, Who::Operator, id).await.map_err(rollout_error)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        RolloutCommand::Pause { id } => steer(id, Steer::Pause).await,
        RolloutCommand::Resume { id } => steer(id, Steer::Resume).await,
        RolloutCommand::Approve { id } => steer(id, Steer::Approve).await,
        RolloutCommand::Cancel { id } => steer(id, Steer::Cancel).await,
    }
}

#[derive(Debug, Subcommand)]
pub enum ArtifactCommand {
    /// Make an Ed25519 signing key: PREFIX.key (secret, 0600; keep it offline) and PREFIX.pub
    /// (for `artifacts.public_keys` and the agents' `update_public_keys`).
    Keygen {
        /// PREFIX: the files written are PREFIX.key and PREFIX.pub.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
    /// Sign an agent build offline (no database, no configuration): writes BUILD.sig.json.
    Sign {
        /// The secret key file from `artifact keygen`.
        #[arg(long)]
        key: PathBuf,
        /// The build's version, MAJOR.MINOR.PATCH[-pre].
        #[arg(long)]
        agent_version: String,
        /// x86_64 or aarch64 (checked against the build's ELF header).
        #[arg(long)]
        arch: String,
        /// The agent binary to sign.
        build: PathBuf,
        /// Default: BUILD.sig.json.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Upload a signed build (checked against `artifacts.public_keys`); prints its sha256.
    Upload {
        /// The signed agent binary (its signature beside it, BUILD.sig.json).
        build: PathBuf,
        /// Default: BUILD.sig.json.
        #[arg(long)]
        signature: Option<PathBuf>,
    },
    /// List the uploaded builds (JSON lines), newest first.
    List,
}

fn with_suffix(path: &std::path::Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes a new file (never over an existing one), with `mode`.
fn write_new(path: &std::path::Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    f.write_all(contents.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

/// `artifact keygen` and `artifact sign`: offline, with no database or configuration.
pub fn artifact_offline(cmd: ArtifactCommand) -> anyhow::Result<()> {
    use hearth_protocol::artifact::{self as art, Manifest};
    match cmd {
        ArtifactCommand::Keygen { out } => {
            let mut seed = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
            let key = art::SigningKey::from_bytes(&seed);
            let (secret, public) = (with_suffix(&out, ".key"), with_suffix(&out, ".pub"));
            write_new(&secret, &format!("{}\n", art::encode_key(&key.to_bytes())), 0o600)?;
            write_new(&public, &format!("{}\n", art::encode_key(key.verifying_key().as_bytes())), 0o644)?;
            println!(
                "secret_key={}\npublic_key={}\nkey_id={}",
                secret.display(),
                public.display(),
                art::key_id(&key.verifying_key())
            );
            Ok(())
        }
        ArtifactCommand::Sign { key, agent_version: version, arch, build, out } => {
            let text = std::fs::read_to_string(&key).with_context(|| format!("cannot read {}", key.display()))?;
            let key = art::signing_key(&text).with_context(|| format!("{} is not a signing key", key.display()))?;
            let arch: art::Arch = arch.parse()?;
            let bytes = std::fs::read(&build).with_context(|| format!("cannot read {}", build.display()))?;
            art::check_elf(&bytes, arch).with_context(|| format!("{} cannot be signed for {arch}", build.display()))?;
            let signed = art::sign(&key, Manifest::of(&bytes, &version, arch)?);
            let out = out.unwrap_or_else(|| with_suffix(&build, ".sig.json"));
            std::fs::write(&out, serde_json::to_string_pretty(&signed)? + "\n")
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!("signature={}\nsha256={}\nkey_id={}", out.display(), signed.manifest.sha256, signed.key_id);
            Ok(())
        }
        _ => anyhow::bail!("this artifact command needs the database"),
    }
}

pub async fn artifact(pool: &PgPool, config: &Config, cmd: ArtifactCommand) -> anyhow::Result<()> {
    match cmd {
        ArtifactCommand::Upload { build, signature } => {
            let sig = signature.unwrap_or_else(|| with_suffix(&build, ".sig.json"));
            let signed: hearth_protocol::artifact::SignedManifest = serde_json::from_str(
                &std::fs::read_to_string(&sig).with_context(|| format!("cannot read {}", sig.display()))?,
            )
            .with_context(|| format!("{} is not a signed manifest", sig.display()))?;
            let bytes = std::fs::read(&build).with_context(|| format!("cannot read {}", build.display()))?;
            let actor = Actor::cli();
            let a =
                crate::domain::artifacts::upload(pool, &config.artifacts, &bytes, &signed, Recorder::new(&actor, None))
                    .await
                    .with_context(|| format!("{} was refused", build.display()))?;
            println!("sha256={}\nversion={}\narch={}\nsize={}", a.sha256, a.version, a.arch, a.size);
            Ok(())
        }
        ArtifactCommand::List => {
            for a in crate::domain::artifacts::list(pool).await? {
                json_line(&a)?;
            }
            Ok(())
        }
        offline => artifact_offline(offline),
    }
}
