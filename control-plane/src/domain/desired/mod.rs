//! Desired configuration: tenant defaults deep-merged with per-appliance overrides into one
//! versioned document per appliance, with secrets sealed at rest ([`secrets`]).
//!
//! The operations ([`get`], [`put`], [`defaults`], [`put_defaults`]) validate a document
//! (after merging: what the appliance would get), seal its secrets, store it in the
//! tenant's transaction with the audit entry, and wake the dispatcher, which sends the new
//! version to online appliances. [`merge`] and [`validate`] are the document rules; the
//! dispatcher merges what it sends and seals its secrets to the appliance
//! (`secrets::for_appliance`).

pub mod secrets;

use hearth_protocol::catalog::{Catalog, Policy, Rejection};
use hearth_protocol::{ApplianceId, TenantId};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use self::secrets::SecretError;
use super::Services;
use crate::db::audit::Recorder;
use crate::db::desired::{self as store, ApplianceConfig, LastApply};
use crate::db::tenant_tx;

/// An appliance's configuration as the API shows it (secrets redacted).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigView {
    /// 0 until the appliance is configured.
    pub desired_version: i64,
    /// Tenant defaults merged with this appliance's overrides (secrets redacted).
    pub desired: Value,
    /// This appliance's own overrides (secrets redacted).
    pub overrides: Value,
    /// The last version the appliance applied successfully.
    pub applied_version: Option<i64>,
    pub last_apply: Option<LastApply>,
    /// The appliance does not yet run the desired version.
    pub drift: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    #[error("appliance not found")]
    ApplianceNotFound,
    /// The (merged) document breaks a rule.
    #[error(transparent)]
    Invalid(#[from] InvalidConfig),
    /// A secret is malformed, cannot be kept, or cannot be sealed (no key configured).
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Whether the appliance does not (yet) run its desired version.
pub fn drift(c: &ApplianceConfig) -> bool {
    c.desired_version > 0 && c.applied_version != Some(c.desired_version)
}

fn view(c: &ApplianceConfig) -> ConfigView {
    ConfigView {
        desired_version: c.desired_version,
        desired: secrets::redact(&layered(&c.defaults, &c.rollout_overlay, &c.overrides)),
        overrides: secrets::redact(&c.overrides),
        applied_version: c.applied_version,
        last_apply: c.last_apply(),
        drift: drift(c),
    }
}

/// One of the tenant's appliances' desired configuration, applied version and drift.
pub async fn get(svc: &Services, tenant: TenantId, appliance: ApplianceId) -> Result<ConfigView, DesiredError> {
    let mut tx = tenant_tx(&svc.pool, tenant).await?;
    let c = store::get(&mut tx, tenant, appliance).await?.ok_or(DesiredError::ApplianceNotFound)?;
    tx.commit().await?;
    Ok(view(&c))
}

/// Replaces an appliance's overrides (checked merged over the tenant's defaults, secrets
/// sealed, `{"$secret": "[redacted]"}` keeping the stored value), bumps its desired version,
/// audited (`config.update`, secrets redacted), and wakes the dispatcher.
pub async fn put(
    svc: &Services,
    tenant: TenantId,
    appliance: ApplianceId,
    document: &Value,
    audit: Recorder<'_>,
) -> Result<ConfigView, DesiredError> {
    let mut tx = tenant_tx(&svc.pool, tenant).await?;
    let current = store::get(&mut tx, tenant, appliance).await?.ok_or(DesiredError::ApplianceNotFound)?;
    validate(&layered(&current.defaults, &current.rollout_overlay, document), &Policy::default())?;
    let sealed = secrets::seal(document, &current.overrides, tenant, svc.secrets.as_ref(), "")?;
    store::set_overrides(&mut tx, tenant, appliance, &sealed).await?;
    // Secrets appear in the trail as `[redacted]`, like everywhere else.
    audit
        .record(
            &mut tx,
            Some(tenant),
            "config.update",
            ("appliance", appliance.to_string()),
            Some(secrets::redact(&current.overrides)),
            Some(secrets::redact(&sealed)),
        )
        .await?;
    tx.commit().await?;
    svc.wake.wake();
    tracing::info!(%appliance, "desired configuration changed");
    get(svc, tenant, appliance).await
}

/// The tenant's configuration defaults (secrets redacted).
pub async fn defaults(svc: &Services, tenant: TenantId) -> Result<Value, DesiredError> {
    let mut tx = tenant_tx(&svc.pool, tenant).await?;
    let defaults = store::tenant_defaults(&mut tx, tenant).await?;
    tx.commit().await?;
    Ok(secrets::redact(&defaults))
}

/// Replaces the tenant's defaults (every appliance's base; each one's desired version is
/// bumped), audited (`config.defaults_update`), and wakes the dispatcher. Returns the new
/// defaults, secrets redacted.
pub async fn put_defaults(
    svc: &Services,
    tenant: TenantId,
    document: &Value,
    audit: Recorder<'_>,
) -> Result<Value, DesiredError> {
    validate(document, &Policy::default())?;
    let mut tx = tenant_tx(&svc.pool, tenant).await?;
    let previous = store::tenant_defaults(&mut tx, tenant).await?;
    let sealed = secrets::seal(document, &previous, tenant, svc.secrets.as_ref(), "")?;
    store::set_defaults(&mut tx, tenant, &sealed).await?;
    audit
        .record(
            &mut tx,
            Some(tenant),
            "config.defaults_update",
            ("tenant", tenant.to_string()),
            Some(secrets::redact(&previous)),
            Some(secrets::redact(&sealed)),
        )
        .await?;
    tx.commit().await?;
    svc.wake.wake();
    Ok(secrets::redact(&sealed))
}

/// An appliance's desired document: the tenant's defaults, then what fleet rollouts
/// overlaid, then the appliance's own overrides.
pub fn layered(defaults: &Value, rollout_overlay: &Value, overrides: &Value) -> Value {
    merge(&merge(defaults, rollout_overlay), overrides)
}

/// Deep merge: objects merge key by key (recursively); anything else in `over` replaces
/// what is in `base`. A `{"$encrypted": …}` or `{"$secret": …}` value is a leaf.
pub fn merge(base: &Value, over: &Value) -> Value {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) if !is_secret(over) && !is_secret(base) => {
            let mut out = b.clone();
            for (k, v) in o {
                let merged = match b.get(k) {
                    Some(bv) => merge(bv, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        _ => over.clone(),
    }
}

/// A configuration document that breaks a rule: where, which rule, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct InvalidConfig {
    pub path: String,
    pub rule: &'static str,
    pub message: String,
}

fn invalid(path: &str, rule: &'static str, message: impl Into<String>) -> InvalidConfig {
    InvalidConfig { path: path.to_string(), rule, message: message.into() }
}

/// Checks a (merged) configuration document. Entries that mirror catalog actions (DNS
/// records, forwarders, shares, users, mail aliases) are checked with the catalog's own
/// validator, so a configuration can never hold what a task would be refused for. No
/// string anywhere in the document (a secret's too) may hold a control character
/// (`control_character`): each ends up in a configuration file on the appliance, where a
/// newline would add a line of its own (`mail.relay.host` in Postfix's `main.cf`).
///
/// ```json
/// {"agent": {"heartbeat_interval_s": 30},
///  "dns": {"records": [{"hostname": "nas.home", "ip": "192.168.1.10"}], "forwarders": ["9.9.9.9"]},
///  "shares": [{"name": "photos", "users": ["alice"], "read_only": false}],
///  "users": [{"username": "alice", "full_name": "Alice", "groups": ["family"]}],
///  "mail": {"aliases": [{"alias": "family", "destination": "alice"}],
///           "relay": {"host": "smtp.example.com", "port": 587, "username": "me", "password": {"$secret": "…"}}}}
/// ```
pub fn validate(doc: &Value, policy: &Policy) -> Result<(), InvalidConfig> {
    let catalog = Catalog::embedded();
    let as_action = |action: &str, params: &Value, path: &str| -> Result<(), InvalidConfig> {
        let obj = params.as_object().ok_or_else(|| invalid(path, "wrong_type", "must be an object"))?;
        catalog.validate(action, obj, policy).map(|_| ()).map_err(|r: Rejection| InvalidConfig {
            path: match &r.param {
                Some(p) => format!("{path}.{p}"),
                None => path.to_string(),
            },
            rule: r.rule,
            message: r.message,
        })
    };
    let list = |v: &Value,
                path: &str,
                each: &dyn Fn(&Value, &str) -> Result<(), InvalidConfig>|
     -> Result<(), InvalidConfig> {
        let items = v.as_array().ok_or_else(|| invalid(path, "wrong_type", "must be a list"))?;
        if items.len() > 1000 {
            return Err(invalid(path, "too_many", "at most 1000 entries"));
        }
        items.iter().enumerate().try_for_each(|(i, item)| each(item, &format!("{path}[{i}]")))
    };
    let section = |v: &Value, path: &str, allowed: &[&str]| -> Result<Map<String, Value>, InvalidConfig> {
        let obj = v.as_object().ok_or_else(|| invalid(path, "wrong_type", "must be an object"))?;
        if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(invalid(
                &join(path, k),
                "unknown_setting",
                format!("unknown setting (allowed: {})", allowed.join(", ")),
            ));
        }
        Ok(obj.clone())
    };

    let top = section(doc, "", &["agent", "dns", "shares", "users", "mail"])?;
    if let Some(path) = control_character(doc, "") {
        return Err(invalid(
            &path,
            "control_character",
            "must not contain control characters (such as a newline, a tab or NUL): it ends up in a configuration file",
        ));
    }
    if let Some(agent) = top.get("agent") {
        let agent = section(agent, "agent", &["heartbeat_interval_s"])?;
        if let Some(v) = agent.get("heartbeat_interval_s") {
            if !v.as_u64().is_some_and(|s| (1..=86_400).contains(&s)) {
                return Err(invalid(
                    "agent.heartbeat_interval_s",
                    "out_of_range",
                    "must be a whole number of seconds from 1 to 86400",
                ));
            }
        }
    }
    if let Some(dns) = top.get("dns") {
        let dns = section(dns, "dns", &["records", "forwarders"])?;
        if let Some(records) = dns.get("records") {
            list(records, "dns.records", &|r, p| as_action("dns.record.add", r, p))?;
        }
        if let Some(f) = dns.get("forwarders") {
            as_action("dns.forwarders.set", &serde_json::json!({ "servers": f }), "dns.forwarders")?;
        }
    }
    if let Some(shares) = top.get("shares") {
        list(shares, "shares", &|s, p| as_action("shares.add", s, p))?;
    }
    if let Some(users) = top.get("users") {
        list(users, "users", &|u, p| as_action("users.add", u, p))?;
    }
    if let Some(mail) = top.get("mail") {
        let mail = section(mail, "mail", &["aliases", "relay"])?;
        if let Some(aliases) = mail.get("aliases") {
            list(aliases, "mail.aliases", &|a, p| as_action("mail.alias.add", a, p))?;
        }
        if let Some(relay) = mail.get("relay") {
            let relay = section(relay, "mail.relay", &["host", "port", "username", "password"])?;
            if !relay.get("host").and_then(Value::as_str).is_some_and(|h| (1..=253).contains(&h.len())) {
                return Err(invalid("mail.relay.host", "missing_parameter", "a relay needs a host name"));
            }
            if let Some(port) = relay.get("port") {
                if !port.as_u64().is_some_and(|p| (1..=65_535).contains(&p)) {
                    return Err(invalid("mail.relay.port", "out_of_range", "must be a port number"));
                }
            }
            if let Some(user) = relay.get("username") {
                if user.as_str().is_none_or(|u| u.len() > 128) {
                    return Err(invalid(
                        "mail.relay.username",
                        "wrong_type",
                        "must be a string of at most 128 characters",
                    ));
                }
            }
            if let Some(pw) = relay.get("password") {
                if !is_secret(pw) {
                    return Err(invalid(
                        "mail.relay.password",
                        "not_secret",
                        "passwords must be written as {\"$secret\": \"…\"} so they are encrypted at rest",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Where a string (a key or a value, at any depth) holds a control character.
fn control_character(v: &Value, path: &str) -> Option<String> {
    match v {
        Value::String(s) => s.chars().any(char::is_control).then(|| path.to_string()),
        Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, x)| control_character(x, &format!("{path}[{i}]")))
        }
        Value::Object(map) => map.iter().find_map(|(k, x)| {
            let child = join(path, k);
            if k.chars().any(char::is_control) {
                Some(child.escape_default().to_string())
            } else {
                control_character(x, &child)
            }
        }),
        _ => None,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn is_secret(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|o| o.len() == 1 && (o.contains_key(secrets::SECRET) || o.contains_key(secrets::ENCRYPTED)))
}

/// Any tenant's appliance's configuration (operators): found by the appliance's id, read in
/// its tenant's transaction, secrets redacted as for the customer.
pub async fn fleet_get(svc: &Services, appliance: ApplianceId) -> Result<ConfigView, DesiredError> {
    let tenant =
        crate::db::appliances::fleet_get(&svc.pool, appliance).await?.ok_or(DesiredError::ApplianceNotFound)?.tenant_id;
    get(svc, tenant, appliance).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_obey_the_catalog_rules() {
        let p = Policy::default();
        let ok = json!({"agent": {"heartbeat_interval_s": 30},
            "dns": {"records": [{"hostname": "nas.home", "ip": "192.168.1.10"}], "forwarders": ["9.9.9.9"]},
            "shares": [{"name": "photos", "users": ["alice"]}],
            "users": [{"username": "alice", "groups": ["family"]}],
            "mail": {"aliases": [{"alias": "family", "destination": "alice"}],
                     "relay": {"host": "smtp.example.com", "port": 587, "password": {"$secret": "x"}}}});
        assert_eq!(validate(&ok, &p), Ok(()));
        let err = |d: Value| validate(&d, &p).unwrap_err();
        let e = err(json!({"dns": {"records": [{"hostname": "evil.com", "ip": "1.2.3.4"}]}}));
        assert_eq!((e.path.as_str(), e.rule), ("dns.records[0].hostname", "not_local_domain"));
        let e = err(json!({"users": [{"username": "eve", "groups": ["sudo"]}]}));
        assert_eq!((e.path.as_str(), e.rule), ("users[0].groups[0]", "privileged_group"));
        assert_eq!(err(json!({"firewall": {}})).rule, "unknown_setting");
        assert_eq!(err(json!({"agent": {"heartbeat_interval_s": 0}})).rule, "out_of_range");
        assert_eq!(err(json!({"mail": {"relay": {"host": "h", "password": "plain"}}})).rule, "not_secret");
        assert_eq!(err(json!({"dns": {"forwarders": []}})).rule, "too_few");
        assert_eq!(err(json!({"dns": {"forwarders": ["127.0.0.1"]}})).rule, "unusable_ip");
    }

    #[test]
    fn no_string_holds_a_control_character() {
        let p = Policy::default();
        let err = |d: Value| validate(&d, &p).unwrap_err();
        for bad in ["smtp.example.com\nrelayhost = evil.example", "a\rb", "a\0b", "a\tb"] {
            let e = err(json!({"mail": {"relay": {"host": bad, "port": 587}}}));
            assert_eq!((e.path.as_str(), e.rule), ("mail.relay.host", "control_character"), "{bad:?}");
            let e = err(json!({"mail": {"relay": {"host": "smtp.example.com", "username": bad}}}));
            assert_eq!((e.path.as_str(), e.rule), ("mail.relay.username", "control_character"));
            let e = err(json!({"mail": {"relay": {"host": "smtp.example.com", "password": {"$secret": bad}}}}));
            assert_eq!((e.path.as_str(), e.rule), ("mail.relay.password.$secret", "control_character"));
            let e = err(json!({"users": [{"username": "alice", "full_name": bad}]}));
            assert_eq!((e.path.as_str(), e.rule), ("users[0].full_name", "control_character"));
        }
        let e = err(json!({"mail": {"relay": {"host": "smtp.example.com", "x\ny": 1}}}));
        assert_eq!(e.rule, "control_character");
    }

    #[test]
    fn objects_merge_everything_else_replaces() {
        let base = json!({"agent": {"heartbeat_interval_s": 30}, "dns": {"forwarders": ["9.9.9.9"], "records": [{"hostname": "a.home", "ip": "10.0.0.1"}]}, "mail": {"relay": {"password": {"$encrypted": "x"}}}});
        let over = json!({"dns": {"forwarders": ["1.1.1.1"]}, "mail": {"relay": {"password": {"$encrypted": "y"}}}});
        let m = merge(&base, &over);
        assert_eq!(m["agent"]["heartbeat_interval_s"], 30);
        assert_eq!(m["dns"]["forwarders"], json!(["1.1.1.1"]));
        assert_eq!(m["dns"]["records"][0]["ip"], "10.0.0.1");
        assert_eq!(m["mail"]["relay"]["password"], json!({"$encrypted": "y"}));
    }
}
