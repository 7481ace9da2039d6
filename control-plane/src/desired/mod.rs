//! Desired configuration: tenant defaults deep-merged with per-appliance overrides into one
//! versioned document per appliance, with secrets sealed at rest ([`secrets`]).

pub mod secrets;

use hearth_protocol::catalog::{Catalog, Policy, Rejection};
use serde_json::{Map, Value};

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
pub struct Invalid {
    pub path: String,
    pub rule: &'static str,
    pub message: String,
}

fn invalid(path: &str, rule: &'static str, message: impl Into<String>) -> Invalid {
    Invalid { path: path.to_string(), rule, message: message.into() }
}

/// Checks a (merged) configuration document. Entries that mirror catalog actions (DNS
/// records, forwarders, shares, users, mail aliases) are checked with the catalog's own
/// validator, so a configuration can never hold what a task would be refused for.
///
/// ```json
/// {"agent": {"heartbeat_interval_s": 30},
///  "dns": {"records": [{"hostname": "nas.home", "ip": "192.168.1.10"}], "forwarders": ["9.9.9.9"]},
///  "shares": [{"name": "photos", "users": ["alice"], "read_only": false}],
///  "users": [{"username": "alice", "full_name": "Alice", "groups": ["family"]}],
///  "mail": {"aliases": [{"alias": "family", "destination": "alice"}],
///           "relay": {"host": "smtp.example.com", "port": 587, "username": "me", "password": {"$secret": "…"}}}}
/// ```
pub fn validate(doc: &Value, policy: &Policy) -> Result<(), Invalid> {
    let catalog = Catalog::embedded();
    let as_action = |action: &str, params: &Value, path: &str| -> Result<(), Invalid> {
        let obj = params.as_object().ok_or_else(|| invalid(path, "wrong_type", "must be an object"))?;
        catalog.validate(action, obj, policy).map(|_| ()).map_err(|r: Rejection| Invalid {
            path: match &r.param {
                Some(p) => format!("{path}.{p}"),
                None => path.to_string(),
            },
            rule: r.rule,
            message: r.message,
        })
    };
    let list = |v: &Value, path: &str, each: &dyn Fn(&Value, &str) -> Result<(), Invalid>| -> Result<(), Invalid> {
        let items = v.as_array().ok_or_else(|| invalid(path, "wrong_type", "must be a list"))?;
        if items.len() > 1000 {
            return Err(invalid(path, "too_many", "at most 1000 entries"));
        }
        items.iter().enumerate().try_for_each(|(i, item)| each(item, &format!("{path}[{i}]")))
    };
    let section = |v: &Value, path: &str, allowed: &[&str]| -> Result<Map<String, Value>, Invalid> {
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
