//! The operator CLI (`hearth-control-plane tenant|plan|key|user|operator …`): the admin
//! API's ground for scripts and first set-up, straight against the database as the service
//! role. Every change is audited with actor `cli` (and the OS user). Output is `key=value`
//! lines (secrets shown once) or, for lists, one JSON object per line.

use std::io::BufRead;

use anyhow::Context;
use clap::Subcommand;
use hearth_protocol::{ApplianceId, TenantId};
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::Config;
use crate::db;
use crate::db::audit::{snapshot, Actor, Recorder};
use crate::db::operators::{self, Role};
use crate::db::plans::{self, Quotas};
use crate::db::tenants::{self, Changes};
use crate::db::users::{self, UserRole};
use crate::pki::CertificateAuthority;
use crate::revocation::{self, Revoker};

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant; prints its id and its first API key (shown once).
    Create {
        name: String,
        /// Plan name (default: none, the configured `limits.*` apply).
        #[arg(long)]
        plan: Option<String>,
    },
    /// List tenants (JSON lines), optionally those whose name contains TEXT.
    List {
        #[arg(long)]
        search: Option<String>,
    },
    /// Suspend a tenant: its keys, sign-ins and appliances are refused until reactivated.
    Suspend { id: TenantId },
    /// Reactivate a suspended tenant.
    Activate { id: TenantId },
    /// Put a tenant on a plan (`--none`: the configured default quotas).
    SetPlan {
        id: TenantId,
        #[arg(required_unless_present = "none")]
        plan: Option<String>,
        #[arg(long, conflicts_with = "plan")]
        none: bool,
    },
    /// Delete a tenant and everything it owns; its appliances are revoked first (CRL).
    Delete {
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
        name: String,
        #[arg(long)]
        api_per_minute: Option<i32>,
        #[arg(long)]
        api_burst: Option<i32>,
        #[arg(long)]
        assistant_per_hour: Option<i32>,
        #[arg(long)]
        assistant_burst: Option<i32>,
        #[arg(long)]
        mqtt_per_minute: Option<i32>,
        #[arg(long)]
        mqtt_burst: Option<i32>,
    },
    /// List plans (JSON lines).
    List,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Issue an API key for a tenant (shown once).
    Issue {
        #[arg(long)]
        tenant: TenantId,
        #[arg(default_value = "default")]
        name: String,
    },
    /// Revoke one of a tenant's API keys.
    Revoke {
        #[arg(long)]
        tenant: TenantId,
        id: Uuid,
    },
    /// List a tenant's API keys (JSON lines; prefixes only).
    List {
        #[arg(long)]
        tenant: TenantId,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a tenant user; the password is read from the first line of standard input.
    Create {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "owner", value_parser = ["owner", "member"])]
        role: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Issue an operator token (shown once) with a role: admin, support or viewer.
    Create {
        name: String,
        #[arg(long, default_value = "admin", value_parser = ["admin", "support", "viewer"])]
        role: String,
    },
    /// List operator tokens (JSON lines).
    List,
    /// Revoke an operator token.
    Revoke { id: Uuid },
}

fn json_line<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

pub async fn tenant(pool: &PgPool, config: &Config, cmd: TenantCommand) -> anyhow::Result<()> {
    let actor = Actor::cli();
    let audit = Recorder::new(&actor, None);
    match cmd {
        TenantCommand::Create { name, plan } => {
            let plan = match plan {
                Some(p) => Some(plans::id_by_name(pool, &p).await?.with_context(|| format!("no plan named {p:?}"))?),
                None => None,
            };
            let mut tx = pool.begin().await?;
            let t = tenants::insert(&mut tx, &name, plan).await.context("cannot create the tenant")?;
            let (info, key) = tenants::issue_key(&mut tx, t.id, "default", &actor.label()).await?;
            audit
                .record(&mut tx, Some(t.id), "tenant.create", ("tenant", t.id.to_string()), None, snapshot(&t))
                .await?;
            audit
                .record(&mut tx, Some(t.id), "api_key.issue", ("api_key", info.id.to_string()), None, snapshot(&info))
                .await?;
            tx.commit().await?;
            println!("tenant_id={}\napi_key={}", t.id, key.expose());
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
            let (status, action) = if matches!(cmd, TenantCommand::Suspend { .. }) {
                ("suspended", "tenant.suspend")
            } else {
                ("active", "tenant.reactivate")
            };
            change(pool, &audit, id, action, Changes { status: Some(status.into()), ..Default::default() }).await?;
            println!("tenant_id={id}\nstatus={status}");
        }
        TenantCommand::SetPlan { id, plan, none } => {
            let plan_id = match (plan, none) {
                (Some(p), _) => {
                    Some(plans::id_by_name(pool, &p).await?.with_context(|| format!("no plan named {p:?}"))?)
                }
                (None, _) => None,
            };
            change(pool, &audit, id, "tenant.update", Changes { plan: Some(plan_id), ..Default::default() }).await?;
            println!("tenant_id={id}\nplan_id={}", plan_id.map(|p| p.to_string()).unwrap_or_default());
        }
        TenantCommand::Delete { id, yes } => {
            anyhow::ensure!(yes, "deleting a tenant cannot be undone; pass --yes");
            let (_, revoked) =
                revocation::delete_tenant(pool, audit, id).await?.with_context(|| format!("no tenant with id {id}"))?;
            make_revocations_bite(pool, config, &revoked).await?;
            println!("tenant_id={id}\ndeleted=true\nrevoked_appliances={}", revoked.len());
        }
    }
    Ok(())
}

async fn change(pool: &PgPool, audit: &Recorder<'_>, id: TenantId, action: &str, c: Changes) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let before = tenants::get(&mut tx, id).await?.with_context(|| format!("no tenant with id {id}"))?;
    let after = tenants::update(&mut tx, id, &c).await?.with_context(|| format!("no tenant with id {id}"))?;
    audit.record(&mut tx, Some(id), action, ("tenant", id.to_string()), snapshot(&before), snapshot(&after)).await?;
    tx.commit().await?;
    Ok(())
}

/// Publishes the CRL and disconnects the appliances (the CLI has the same PKI and broker
/// settings as `serve`). Runs after the revocation is committed, and says so if it fails.
async fn make_revocations_bite(pool: &PgPool, config: &Config, revoked: &[ApplianceId]) -> anyhow::Result<()> {
    let bite = async {
        let ca = CertificateAuthority::load(&config.pki.dir).context("setting `pki.dir`: the CA cannot be loaded")?;
        let revoker = Revoker::new(config, pool.clone(), std::sync::Arc::new(ca))?;
        anyhow::Ok(revoker.enforce(revoked).await?)
    };
    bite.await.context(
        "the revocation is recorded (the control plane refuses the appliances and lists them on the next CRL it \
         issues, at its next start at the latest), but the CRL could not be published or the appliances \
         disconnected now",
    )
}

/// `appliance revoke ID`.
pub async fn revoke_appliance(pool: &PgPool, config: &Config, id: ApplianceId) -> anyhow::Result<()> {
    let actor = Actor::cli();
    let r = revocation::revoke_appliance(pool, Recorder::new(&actor, None), id)
        .await?
        .with_context(|| format!("no appliance with id {id}"))?;
    make_revocations_bite(pool, config, &[id]).await?;
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
        } => {
            let d = Quotas::from(config.limits);
            let q = Quotas {
                api_per_minute: api_per_minute.unwrap_or(d.api_per_minute),
                api_burst: api_burst.unwrap_or(d.api_burst),
                assistant_per_hour: assistant_per_hour.unwrap_or(d.assistant_per_hour),
                assistant_burst: assistant_burst.unwrap_or(d.assistant_burst),
                mqtt_per_minute: mqtt_per_minute.unwrap_or(d.mqtt_per_minute),
                mqtt_burst: mqtt_burst.unwrap_or(d.mqtt_burst),
            };
            if let Some(f) = q.invalid_field() {
                anyhow::bail!("--{} must be at least 1", f.replace('_', "-"));
            }
            let actor = Actor::cli();
            let mut tx = pool.begin().await?;
            let p = plans::create(&mut tx, &name, &q).await.map_err(|e| {
                if db::is_constraint(&e, "plans_name_key") {
                    anyhow::anyhow!("a plan named {name:?} exists already")
                } else {
                    anyhow::Error::new(e)
                }
            })?;
            Recorder::new(&actor, None)
                .record(&mut tx, None, "plan.create", ("plan", p.id.to_string()), None, snapshot(&p))
                .await?;
            tx.commit().await?;
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
    let mut tx = pool.begin().await?;
    match cmd {
        KeyCommand::Issue { tenant, name } => {
            tenants::get(&mut tx, tenant).await?.with_context(|| format!("no tenant with id {tenant}"))?;
            let (info, key) = tenants::issue_key(&mut tx, tenant, &name, &actor.label()).await?;
            audit
                .record(&mut tx, Some(tenant), "api_key.issue", ("api_key", info.id.to_string()), None, snapshot(&info))
                .await?;
            println!("key_id={}\napi_key={}", info.id, key.expose());
        }
        KeyCommand::Revoke { tenant, id } => {
            let k = tenants::revoke_key(&mut tx, tenant, id)
                .await?
                .with_context(|| format!("tenant {tenant} has no key {id}"))?;
            audit
                .record(&mut tx, Some(tenant), "api_key.revoke", ("api_key", id.to_string()), None, snapshot(&k))
                .await?;
            println!("key_id={id}\nrevoked=true");
        }
        KeyCommand::List { tenant } => {
            for k in tenants::list_keys(&mut tx, tenant).await? {
                json_line(&k)?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

pub async fn user(pool: &PgPool, cmd: UserCommand) -> anyhow::Result<()> {
    let UserCommand::Create { tenant, email, role } = cmd;
    let role: UserRole = role.parse().map_err(anyhow::Error::msg)?;
    let mut password = String::new();
    std::io::stdin().lock().read_line(&mut password).context("cannot read the password from standard input")?;
    let password = password.trim_end_matches(['\r', '\n']);
    let actor = Actor::cli();
    let mut tx = pool.begin().await?;
    tenants::get(&mut tx, tenant).await?.with_context(|| format!("no tenant with id {tenant}"))?;
    let u = users::create(&mut tx, tenant, &email, password, role).await.map_err(|e| match e {
        users::UserError::Database(ref d) if db::is_constraint(d, "tenant_users_email_key") => {
            anyhow::anyhow!("an account for {email} exists already")
        }
        other => anyhow::Error::new(other),
    })?;
    Recorder::new(&actor, None)
        .record(&mut tx, Some(tenant), "user.create", ("user", u.id.to_string()), None, snapshot(&u))
        .await?;
    tx.commit().await?;
    println!("user_id={}", u.id);
    Ok(())
}

pub async fn operator(pool: &PgPool, cmd: OperatorCommand) -> anyhow::Result<()> {
    let actor = Actor::cli();
    let audit = Recorder::new(&actor, None);
    match cmd {
        OperatorCommand::Create { name, role } => {
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            let mut tx = pool.begin().await?;
            let (info, token) = operators::create(&mut tx, &name, role, &actor.label()).await?;
            audit
                .record(&mut tx, None, "operator.issue", ("operator", info.id.to_string()), None, snapshot(&info))
                .await?;
            tx.commit().await?;
            println!("operator_id={}\noperator_token={}", info.id, token.expose());
        }
        OperatorCommand::List => {
            for o in operators::list(pool).await? {
                json_line(&o)?;
            }
        }
        OperatorCommand::Revoke { id } => {
            let mut tx = pool.begin().await?;
            let o = operators::revoke(&mut tx, id).await?.with_context(|| format!("no operator token {id}"))?;
            audit.record(&mut tx, None, "operator.revoke", ("operator", id.to_string()), None, snapshot(&o)).await?;
            tx.commit().await?;
            println!("operator_id={id}\nrevoked=true");
        }
    }
    Ok(())
}
