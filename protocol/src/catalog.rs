//! The action catalog (`ansible/catalog.json`) and its one validator.
//!
//! The catalog is the contract between the control plane, the support assistant and the
//! agent: every action's id, playbook, description, risk, parameter schema (a JSON Schema
//! subset, also used to constrain the LLM's output) and example phrasings. The control
//! plane validates a task before storing it and the agent validates it again, with its own
//! copy, before running it — with this same code.
//!
//! The schema subset understood: `type` (object, string, boolean, array), `properties`,
//! `required`, `additionalProperties: false`, `items`, `minItems`, `maxItems`,
//! `maxLength`, `enum`, `default`, and these `format`s, checked by hand. Every string
//! parameter, whatever its format, is refused if it holds a control character (U+0000 to
//! U+001F, U+007F to U+009F: rule `control_character`), since every one of them ends up
//! in a configuration file, where a newline would start a line of the attacker's choosing.
//!
//! | format | rule |
//! |---|---|
//! | `hearth-username` | `^[a-z_][a-z0-9_-]{0,31}$`, and not a system account (`reserved_users`, `systemd-*`, `_*`) |
//! | `hearth-full-name` | no `:` and no control characters (it lands in `/etc/passwd`) |
//! | `hearth-group` | a username that is not a privileged group |
//! | `hearth-share-name` | `^[A-Za-z0-9_-]{1,32}$` |
//! | `hearth-local-hostname` | a DNS name inside the local domains, no wildcard; normalised to lower case without a trailing dot |
//! | `ip` | an IPv4 or IPv6 address |
//! | `hearth-host-ip` | an IPv4 or IPv6 address a host can have: not loopback (`127.0.0.0/8`, `::1`), unspecified (`0.0.0.0`, `::`), multicast or broadcast, also written IPv4-mapped (`unusable_ip`); public addresses are allowed |
//! | `hearth-mail-alias` | `^[a-z0-9][a-z0-9._-]{0,63}$` |
//! | `hearth-mail-destination` | a username or an e-mail address whose local part is only letters, digits and `._%+-` (in an aliases file `|` or `/` would mean a command or a file) |
//!
//! Across parameters: an action with a `hearth-mail-alias` parameter `alias` and a
//! `hearth-mail-destination` parameter `destination` may not forward a reserved alias
//! (the catalog's `reserved_aliases`: `root`, `postmaster`, `abuse`, …) to an address
//! outside the appliance's local domains (`reserved_alias`): the mail the system and other
//! mail servers send there — cron output, bounces, abuse reports — would leave the household,
//! unless the [`Policy`] allows it (`allow_external_reserved_aliases`).
//!
//! ```
//! use hearth_protocol::catalog::{Catalog, Policy};
//! let catalog = Catalog::embedded();
//! let policy = Policy::default();
//! let params = serde_json::json!({"hostname": "printer.home", "ip": "192.168.1.50"});
//! assert!(catalog.validate("dns.record.add", params.as_object().unwrap(), &policy).is_ok());
//!
//! let bad = serde_json::json!({"username": "alice", "groups": ["sudo"]});
//! let err = catalog.validate("users.add", bad.as_object().unwrap(), &policy).unwrap_err();
//! assert_eq!((err.param.as_deref(), err.rule), (Some("groups[0]"), "privileged_group"));
//! ```

use std::net::IpAddr;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How dangerous an action is. High-risk actions always need explicit confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    Low,
    High,
}

/// One catalog action.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub id: String,
    /// Relative to the `ansible/` directory.
    pub playbook: String,
    pub description: String,
    pub risk: Risk,
    /// JSON Schema (the subset above) of the parameters object.
    pub params: Value,
    pub examples: Vec<String>,
    /// Valid parameters, used by tests and the demo.
    pub example_params: Map<String, Value>,
}

/// The whole catalog.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub version: u32,
    /// Domains local host names must end in, unless a [`Policy`] says otherwise.
    pub local_domains: Vec<String>,
    pub privileged_groups: Vec<String>,
    /// System accounts no task may create, remove or change (besides `systemd-*` and `_*`).
    #[serde(default)]
    pub reserved_users: Vec<String>,
    /// Mail aliases the system and other mail servers write to (`root`, `postmaster`,
    /// `abuse`, …), which may only be delivered inside the appliance's local domains unless
    /// a [`Policy`] allows otherwise.
    #[serde(default)]
    pub reserved_aliases: Vec<String>,
    pub actions: Vec<Action>,
}

/// Per-appliance settings the rules depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub local_domains: Vec<String>,
    /// Whether reserved mail aliases (`root`, `postmaster`, …) may forward to an address
    /// outside the local domains. Off unless set.
    pub allow_external_reserved_aliases: bool,
}

impl Policy {
    /// The default rules with these local domains.
    pub fn with_local_domains(local_domains: Vec<String>) -> Self {
        Policy { local_domains, allow_external_reserved_aliases: false }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::with_local_domains(Catalog::embedded().local_domains.clone())
    }
}

/// Why a task was refused: which parameter, which rule (a stable code) and a sentence for
/// people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    pub param: Option<String>,
    pub rule: &'static str,
    pub message: String,
}

/// A catalog file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog is not valid JSON of the expected shape: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("catalog action {action}: {problem}")]
    Invalid { action: String, problem: String },
}

const EMBEDDED: &str = include_str!("../../ansible/catalog.json");

impl Catalog {
    /// The catalog this build was made with (`ansible/catalog.json`).
    pub fn embedded() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| match Catalog::from_json(EMBEDDED.as_bytes()) {
            Ok(c) => c,
            // The embedded catalog is checked by this crate's tests; a broken one cannot build a release.
            Err(e) => panic!("the embedded ansible/catalog.json is invalid: {e}"),
        })
    }

    /// Parses a catalog and checks every schema uses only what the validator understands
    /// and every example validates.
    pub fn from_json(bytes: &[u8]) -> Result<Catalog, CatalogError> {
        let catalog: Catalog = serde_json::from_slice(bytes)?;
        let policy = Policy::with_local_domains(catalog.local_domains.clone());
        for action in &catalog.actions {
            let invalid = |problem: String| CatalogError::Invalid { action: action.id.clone(), problem };
            check_schema(&action.params).map_err(invalid)?;
            catalog
                .validate(&action.id, &action.example_params, &policy)
                .map_err(|r| invalid(format!("example_params do not validate: {r}")))?;
        }
        Ok(catalog)
    }

    pub fn action(&self, id: &str) -> Option<&Action> {
        self.actions.iter().find(|a| a.id == id)
    }

    /// Validates `params` for `action`. Returns the action and the parameters with schema
    /// defaults filled in.
    pub fn validate(
        &self,
        action: &str,
        params: &Map<String, Value>,
        policy: &Policy,
    ) -> Result<(&Action, Map<String, Value>), Rejection> {
        let Some(a) = self.action(action) else {
            return Err(Rejection {
                param: None,
                rule: "unknown_action",
                message: format!("{:?} is not an action in the catalog", truncate(action)),
            });
        };
        let ctx = Ctx { policy, privileged: &self.privileged_groups, reserved: &self.reserved_users };
        let mut params = params.clone();
        check_object(&a.params, &mut params, "", &ctx)?;
        self.check_reserved_alias(a, &params, policy)?;
        Ok((a, params))
    }

    /// A reserved alias (`root`, `postmaster`, …) forwarded outside the local domains.
    fn check_reserved_alias(&self, a: &Action, params: &Map<String, Value>, policy: &Policy) -> Result<(), Rejection> {
        let format_of = |name: &str| a.params.pointer(&format!("/properties/{name}/format")).and_then(Value::as_str);
        if policy.allow_external_reserved_aliases
            || format_of("alias") != Some("hearth-mail-alias")
            || format_of("destination") != Some("hearth-mail-destination")
        {
            return Ok(());
        }
        let (Some(alias), Some(destination)) =
            (params.get("alias").and_then(Value::as_str), params.get("destination").and_then(Value::as_str))
        else {
            return Ok(());
        };
        if !self.reserved_aliases.iter().any(|r| r == alias) {
            return Ok(());
        }
        let Some((_, domain)) = destination.rsplit_once('@') else { return Ok(()) };
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let local = policy.local_domains.iter().any(|d| {
            let d = d.trim_matches('.').to_ascii_lowercase();
            domain == d || domain.ends_with(&format!(".{d}"))
        });
        if local {
            return Ok(());
        }
        Err(reject(
            "destination",
            "reserved_alias",
            format!(
                "{alias:?} is a reserved alias (system mail, bounces, abuse reports) and may only be delivered to a \
                 local user or an address in the appliance's local domains ({}), not to {:?}",
                policy.local_domains.join(", "),
                truncate(destination)
            ),
        ))
    }
}

struct Ctx<'a> {
    policy: &'a Policy,
    privileged: &'a [String],
    reserved: &'a [String],
}

fn reject(param: &str, rule: &'static str, message: impl Into<String>) -> Rejection {
    Rejection { param: (!param.is_empty()).then(|| param.to_string()), rule, message: message.into() }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn check_object(schema: &Value, obj: &mut Map<String, Value>, path: &str, ctx: &Ctx) -> Result<(), Rejection> {
    let props = schema.get("properties").and_then(Value::as_object);
    if let Some(unknown) = obj.keys().find(|k| !props.is_some_and(|p| p.contains_key(*k))) {
        let allowed: Vec<&str> = props.map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
        return Err(reject(
            &child(path, unknown),
            "unknown_parameter",
            format!(
                "{:?} is not a parameter of this action (allowed: {})",
                truncate(unknown),
                if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
            ),
        ));
    }
    for req in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        if !obj.contains_key(req) {
            return Err(reject(&child(path, req), "missing_parameter", format!("{req} is required")));
        }
    }
    for (key, sub) in props.into_iter().flatten() {
        match obj.get_mut(key) {
            Some(v) => check_value(sub, v, &child(path, key), ctx)?,
            None => {
                if let Some(default) = sub.get("default") {
                    obj.insert(key.clone(), default.clone());
                }
            }
        }
    }
    Ok(())
}

fn check_value(schema: &Value, v: &mut Value, path: &str, ctx: &Ctx) -> Result<(), Rejection> {
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let wrong = |what: &str| reject(path, "wrong_type", format!("{path} must be {what}"));
    match ty {
        "object" => {
            let obj = v.as_object_mut().ok_or_else(|| wrong("an object"))?;
            check_object(schema, obj, path, ctx)
        }
        "boolean" => v.as_bool().map(|_| ()).ok_or_else(|| wrong("true or false")),
        "array" => {
            let items = v.as_array_mut().ok_or_else(|| wrong("a list"))?;
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
                if (items.len() as u64) < min {
                    return Err(reject(path, "too_few", format!("{path} needs at least {min} entries")));
                }
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
                if items.len() as u64 > max {
                    return Err(reject(path, "too_many", format!("{path} allows at most {max} entries")));
                }
            }
            let item_schema = schema.get("items").unwrap_or(&Value::Null);
            for (i, item) in items.iter_mut().enumerate() {
                check_value(item_schema, item, &format!("{path}[{i}]"), ctx)?;
            }
            Ok(())
        }
        "string" => {
            let s = v.as_str().ok_or_else(|| wrong("a string"))?;
            if s.chars().any(char::is_control) {
                return Err(reject(
                    path,
                    "control_character",
                    format!("{path} must not contain control characters (such as a newline, a tab or NUL)"),
                ));
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
                if s.chars().count() as u64 > max {
                    return Err(reject(path, "too_long", format!("{path} is longer than {max} characters")));
                }
            }
            if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
                if !allowed.iter().any(|a| a.as_str() == Some(s)) {
                    let list: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
                    return Err(reject(path, "not_allowed", format!("{path} must be one of: {}", list.join(", "))));
                }
            }
            match schema.get("format").and_then(Value::as_str) {
                Some(f) => {
                    check_format(f, s, path, ctx)?;
                    // One spelling per name: what the appliance gets is lower-case, without
                    // a trailing dot.
                    if f == "hearth-local-hostname" {
                        let normal = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
                        *v = Value::String(normal);
                    }
                    Ok(())
                }
                None => Ok(()),
            }
        }
        _ => Err(reject(path, "schema", format!("{path}: the catalog schema has no usable type"))),
    }
}

fn is_username(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && s.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn is_dns_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

fn check_format(format: &str, s: &str, path: &str, ctx: &Ctx) -> Result<(), Rejection> {
    let shown = truncate(s);
    match format {
        "hearth-username" => {
            if !is_username(s) {
                return Err(reject(path, "invalid_username", format!(
                    "{path} {shown:?} is not a valid user name (lower-case letters, digits, _ and -, at most 32, not starting with a digit or -)"
                )));
            }
            if ctx.reserved.iter().any(|r| r == s) || s.starts_with("systemd-") || s.starts_with('_') {
                return Err(reject(
                    path,
                    "reserved_user",
                    format!("{path} {shown:?} is a system account and cannot be managed"),
                ));
            }
            Ok(())
        }
        "hearth-full-name" => {
            let ok = !s.contains(':') && !s.chars().any(char::is_control);
            ok.then_some(()).ok_or_else(|| {
                reject(path, "invalid_full_name", format!("{path} must not contain ':' or control characters"))
            })
        }
        "hearth-group" => {
            if !is_username(s) {
                return Err(reject(path, "invalid_group", format!("{path} {shown:?} is not a valid group name")));
            }
            if ctx.privileged.iter().any(|p| p == s) {
                return Err(reject(
                    path,
                    "privileged_group",
                    format!("{path} {shown:?} is a privileged group and cannot be granted"),
                ));
            }
            Ok(())
        }
        "hearth-share-name" => {
            let ok =
                (1..=32).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            ok.then_some(()).ok_or_else(|| {
                reject(
                    path,
                    "invalid_share_name",
                    format!("{path} {shown:?} is not a valid share name (letters, digits, _ and -, 1 to 32)"),
                )
            })
        }
        "hearth-local-hostname" => {
            let name = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
            if name.contains('*') {
                return Err(reject(path, "wildcard", format!("{path} {shown:?}: wildcard names are not allowed")));
            }
            if name.len() > 253 || name.split('.').count() < 2 || !name.split('.').all(is_dns_label) {
                return Err(reject(path, "invalid_hostname", format!("{path} {shown:?} is not a valid host name")));
            }
            let local = ctx.policy.local_domains.iter().any(|d| {
                let d = d.trim_matches('.').to_ascii_lowercase();
                name.ends_with(&format!(".{d}"))
            });
            local.then_some(()).ok_or_else(|| {
                reject(
                    path,
                    "not_local_domain",
                    format!(
                        "{path} {shown:?} is not inside the appliance's local domains ({})",
                        ctx.policy.local_domains.join(", ")
                    ),
                )
            })
        }
        "ip" => s
            .parse::<IpAddr>()
            .map(|_| ())
            .map_err(|_| reject(path, "invalid_ip", format!("{path} {shown:?} is not an IPv4 or IPv6 address"))),
        "hearth-host-ip" => {
            let ip: IpAddr = s
                .parse()
                .map_err(|_| reject(path, "invalid_ip", format!("{path} {shown:?} is not an IPv4 or IPv6 address")))?;
            // `::ffff:127.0.0.1` is 127.0.0.1.
            let ip = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                v4 => v4,
            };
            let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
            if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || broadcast {
                return Err(reject(
                    path,
                    "unusable_ip",
                    format!(
                        "{path} {shown:?} is a loopback, unspecified, multicast or broadcast address, which no host on the network can be reached at"
                    ),
                ));
            }
            Ok(())
        }
        "hearth-mail-alias" => {
            let mut chars = s.chars();
            let ok = matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
                && s.len() <= 64
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
            ok.then_some(()).ok_or_else(|| {
                reject(
                    path,
                    "invalid_mail_alias",
                    format!("{path} {shown:?} is not a valid alias (lower-case letters, digits, ., _ and -)"),
                )
            })
        }
        "hearth-mail-destination" => {
            let ok = is_username(s) || is_email(s);
            ok.then_some(()).ok_or_else(|| {
                reject(
                    path,
                    "invalid_mail_destination",
                    format!("{path} {shown:?} is neither a local user name nor an e-mail address"),
                )
            })
        }
        other => Err(reject(path, "schema", format!("{path}: the catalog uses an unknown format {other:?}"))),
    }
}

fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else { return false };
    s.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        // Deliberately narrower than RFC 5322: in an aliases file `|` and `/` would mean a
        // pipe to a command or a file, so only plain characters are accepted.
        && local.chars().all(|c| c.is_ascii_alphanumeric() || "._%+-".contains(c))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && domain.split('.').count() >= 2
        && domain.split('.').all(is_dns_label)
}

/// Checks a parameter schema uses only the subset the validator understands.
fn check_schema(schema: &Value) -> Result<(), String> {
    const KEYS: &[&str] = &[
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minItems",
        "maxItems",
        "maxLength",
        "enum",
        "default",
        "format",
        "pattern",
        "description",
    ];
    let obj = schema.as_object().ok_or("a schema must be an object")?;
    if let Some(k) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!("schema keyword {k:?} is not supported by the validator"));
    }
    match obj.get("type").and_then(Value::as_str) {
        Some("object") => {
            if obj.get("additionalProperties") != Some(&Value::Bool(false)) {
                return Err("objects must set additionalProperties: false".into());
            }
            for sub in obj.get("properties").and_then(Value::as_object).into_iter().flatten().map(|(_, v)| v) {
                check_schema(sub)?;
            }
            Ok(())
        }
        Some("array") => check_schema(obj.get("items").ok_or("arrays need items")?),
        Some("string") | Some("boolean") => Ok(()),
        other => Err(format!("unsupported type {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(action: &str, params: Value) -> Result<Map<String, Value>, (Option<String>, &'static str)> {
        let c = Catalog::embedded();
        c.validate(action, params.as_object().expect("object"), &Policy::default())
            .map(|(_, p)| p)
            .map_err(|r| (r.param, r.rule))
    }

    fn rule(action: &str, params: Value) -> (Option<String>, &'static str) {
        check(action, params).expect_err("should be rejected")
    }

    #[test]
    fn the_embedded_catalog_has_every_required_action() {
        let ids: Vec<&str> = Catalog::embedded().actions.iter().map(|a| a.id.as_str()).collect();
        for id in [
            "users.add",
            "users.remove",
            "users.reset_password",
            "shares.add",
            "shares.remove",
            "dns.record.add",
            "dns.record.remove",
            "dns.forwarders.set",
            "mail.alias.add",
            "mail.alias.remove",
            "pki.cert.issue",
            "service.restart",
            "appliance.reboot",
        ] {
            assert!(ids.contains(&id), "{id} missing");
        }
        let high: Vec<&str> =
            Catalog::embedded().actions.iter().filter(|a| a.risk == Risk::High).map(|a| a.id.as_str()).collect();
        assert_eq!(high, ["users.remove", "shares.remove", "appliance.reboot"]);
    }

    #[test]
    fn usernames() {
        for ok in ["alice", "a", "bob-2", "x_y", "a_", &"a".repeat(32)] {
            assert!(check("users.remove", json!({ "username": ok })).is_ok(), "{ok}");
        }
        for bad in ["Alice", "1bob", "-x", "", "al ice", "root;rm", &"a".repeat(33), "ålice"] {
            assert_eq!(
                rule("users.remove", json!({ "username": bad })),
                (Some("username".into()), "invalid_username"),
                "{bad}"
            );
        }
    }

    #[test]
    fn system_accounts_and_passwd_fields_are_protected() {
        for sys in ["root", "daemon", "postfix", "www-data", "systemd-network", "_apt", "hearth"] {
            assert_eq!(rule("users.remove", json!({ "username": sys })).1, "reserved_user", "{sys}");
            assert_eq!(rule("users.reset_password", json!({ "username": sys })).1, "reserved_user", "{sys}");
        }
        assert_eq!(rule("users.add", json!({ "username": "eve", "full_name": "Eve:0:0" })).1, "invalid_full_name");
        // Control characters are refused for every string, before any format rule.
        for bad in ["Eve\nroot::0:0::/:/bin/sh", "tab\there"] {
            assert_eq!(rule("users.add", json!({ "username": "eve", "full_name": bad })).1, "control_character");
        }
        assert!(check("users.add", json!({ "username": "eve", "full_name": "Ève O'Neil-Smith" })).is_ok());
        assert_eq!(rule("users.add", json!({ "username": "eve", "groups": ["staff"] })).1, "privileged_group");
    }

    #[test]
    fn host_names_are_normalised() {
        let p = check("dns.record.add", json!({ "hostname": "NAS.Home.", "ip": "10.0.0.1" })).expect("valid");
        assert_eq!(p["hostname"], "nas.home");
    }

    #[test]
    fn groups_never_privileged() {
        for g in ["root", "sudo", "wheel", "adm", "admin", "shadow", "disk", "docker", "lxd"] {
            assert_eq!(
                rule("users.add", json!({ "username": "alice", "groups": ["family", g] })),
                (Some("groups[1]".into()), "privileged_group")
            );
        }
    }

    #[test]
    fn hostnames_stay_local() {
        for ok in ["printer.home", "a.b.lan", "NAS.Local", "x.internal."] {
            assert!(check("dns.record.add", json!({ "hostname": ok, "ip": "10.0.0.1" })).is_ok(), "{ok}");
        }
        let r = |h: &str| rule("dns.record.add", json!({ "hostname": h, "ip": "10.0.0.1" })).1;
        assert_eq!(r("google.com"), "not_local_domain");
        assert_eq!(r("evilhome"), "invalid_hostname");
        assert_eq!(r("home"), "invalid_hostname");
        assert_eq!(r("*.home"), "wildcard");
        assert_eq!(r("a..home"), "invalid_hostname");
        assert_eq!(r("-a.home"), "invalid_hostname");
        assert_eq!(r("printer.home.evil.com"), "not_local_domain");
        let custom = Policy::with_local_domains(vec!["example.test".into()]);
        let p = json!({ "hostname": "a.example.test", "ip": "fd00::1" });
        assert!(Catalog::embedded().validate("dns.record.add", p.as_object().unwrap(), &custom).is_ok());
    }

    #[test]
    fn ips_forwarders_and_types() {
        assert_eq!(rule("dns.record.add", json!({ "hostname": "a.home", "ip": "300.1.1.1" })).1, "invalid_ip");
        assert_eq!(rule("dns.forwarders.set", json!({ "servers": [] })).1, "too_few");
        assert_eq!(
            rule("dns.forwarders.set", json!({ "servers": ["1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4", "1.1.1.5"] })).1,
            "too_many"
        );
        assert_eq!(rule("dns.forwarders.set", json!({ "servers": "1.1.1.1" })).1, "wrong_type");
        assert!(check("dns.forwarders.set", json!({ "servers": ["9.9.9.9", "2620:fe::fe"] })).is_ok());
    }

    #[test]
    fn no_string_parameter_holds_a_control_character() {
        // Every string parameter of every action, with a control character in its example
        // value (or in a valid one), is refused with `control_character` and its path.
        for bad in ["\n", "\r", "\0", "\t", "\u{7f}", "\u{85}", "\u{1b}"] {
            let r = |action: &str, params: Value| rule(action, params);
            assert_eq!(
                r("users.add", json!({ "username": format!("eve{bad}") })),
                (Some("username".into()), "control_character")
            );
            assert_eq!(
                r("dns.record.add", json!({ "hostname": format!("nas.home{bad}"), "ip": "10.0.0.1" })),
                (Some("hostname".into()), "control_character")
            );
            assert_eq!(
                r("dns.forwarders.set", json!({ "servers": ["9.9.9.9", format!("1.1.1.1{bad}")] })),
                (Some("servers[1]".into()), "control_character")
            );
            assert_eq!(
                r("mail.alias.add", json!({ "alias": "family", "destination": format!("bob@x.example{bad}") })),
                (Some("destination".into()), "control_character")
            );
            assert_eq!(
                r("service.restart", json!({ "service": format!("dns{bad}") })),
                (Some("service".into()), "control_character")
            );
        }
        // And for every string parameter the catalog has, whatever its format.
        for action in &Catalog::embedded().actions {
            for (name, schema) in action.params["properties"].as_object().unwrap() {
                let mut params = action.example_params.clone();
                let value = match schema["type"].as_str() {
                    Some("string") => json!("a\nb"),
                    Some("array") if schema["items"]["type"] == "string" => json!(["a\nb"]),
                    _ => continue,
                };
                params.insert(name.clone(), value);
                let err = Catalog::embedded().validate(&action.id, &params, &Policy::default()).unwrap_err();
                assert_eq!(err.rule, "control_character", "{} {name}: {err}", action.id);
            }
        }
    }

    #[test]
    fn forwarders_and_records_are_addresses_a_host_can_have() {
        for bad in [
            "127.0.0.1",
            "127.0.0.53",
            "0.0.0.0",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "224.0.0.251",
            "ff02::fb",
            "255.255.255.255",
        ] {
            assert_eq!(
                rule("dns.forwarders.set", json!({ "servers": ["9.9.9.9", bad] })),
                (Some("servers[1]".into()), "unusable_ip"),
                "{bad}"
            );
            assert_eq!(
                rule("dns.record.add", json!({ "hostname": "nas.home", "ip": bad })),
                (Some("ip".into()), "unusable_ip"),
                "{bad}"
            );
        }
        for ok in ["192.168.1.1", "10.0.0.53", "fd00::53", "9.9.9.9", "2620:fe::fe"] {
            assert!(check("dns.forwarders.set", json!({ "servers": [ok] })).is_ok(), "{ok}");
        }
        // A name may point at a public address: the household's own server elsewhere.
        for ok in ["192.168.1.50", "fd00::20", "203.0.113.7", "2001:db8::7"] {
            assert!(check("dns.record.add", json!({ "hostname": "nas.home", "ip": ok })).is_ok(), "{ok}");
        }
    }

    #[test]
    fn reserved_aliases_stay_inside_unless_the_policy_allows_it() {
        for alias in ["root", "postmaster", "abuse", "hostmaster", "webmaster", "mailer-daemon"] {
            assert_eq!(
                rule("mail.alias.add", json!({ "alias": alias, "destination": "attacker@evil.example" })),
                (Some("destination".into()), "reserved_alias"),
                "{alias}"
            );
            // To a local user or an address in a local domain: fine.
            assert!(check("mail.alias.add", json!({ "alias": alias, "destination": "alice" })).is_ok());
            assert!(check("mail.alias.add", json!({ "alias": alias, "destination": "alice@nas.home" })).is_ok());
            assert!(check("mail.alias.add", json!({ "alias": alias, "destination": "alice@NAS.Home" })).is_ok());
        }
        // `home.evil.example` is not inside `home`.
        assert_eq!(
            rule("mail.alias.add", json!({ "alias": "root", "destination": "x@nas.home.evil.example" })).1,
            "reserved_alias"
        );
        // Other aliases may go anywhere.
        assert!(check("mail.alias.add", json!({ "alias": "family", "destination": "bob@example.com" })).is_ok());
        // A policy may allow it.
        let allowing = Policy { allow_external_reserved_aliases: true, ..Policy::default() };
        let p = json!({ "alias": "root", "destination": "admin@example.com" });
        assert!(Catalog::embedded().validate("mail.alias.add", p.as_object().unwrap(), &allowing).is_ok());
    }

    #[test]
    fn unknown_missing_and_defaults() {
        assert_eq!(
            rule("users.add", json!({ "username": "a", "shell": "/bin/sh" })),
            (Some("shell".into()), "unknown_parameter")
        );
        assert_eq!(rule("users.add", json!({})), (Some("username".into()), "missing_parameter"));
        assert_eq!(rule("appliance.reboot", json!({ "now": true })).1, "unknown_parameter");
        assert_eq!(rule("rm -rf", json!({})), (None, "unknown_action"));
        assert_eq!(rule("service.restart", json!({ "service": "ssh" })).1, "not_allowed");
        let p = check("shares.add", json!({ "name": "photos" })).expect("valid");
        assert_eq!(p["read_only"], json!(false), "default filled in");
    }

    #[test]
    fn mail() {
        assert!(check("mail.alias.add", json!({ "alias": "family", "destination": "alice" })).is_ok());
        assert!(check("mail.alias.add", json!({ "alias": "post.master", "destination": "bob@example.com" })).is_ok());
        assert_eq!(
            rule("mail.alias.add", json!({ "alias": "Family!", "destination": "alice" })).1,
            "invalid_mail_alias"
        );
        for bad in [
            "bob@",
            "@x.com",
            "a b@x.com",
            "bob@localhost",
            "|/bin/sh",
            "a@b..com",
            "|cmd@x.yz",
            "/tmp/x@a.bc",
            "a|b@x.yz",
        ] {
            assert_eq!(
                rule("mail.alias.add", json!({ "alias": "x", "destination": bad })).1,
                "invalid_mail_destination",
                "{bad}"
            );
        }
    }

    #[test]
    fn rejections_read_well() {
        let c = Catalog::embedded();
        let p = json!({ "hostname": "evil.com", "ip": "1.2.3.4" });
        let err = c.validate("dns.record.add", p.as_object().unwrap(), &Policy::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "hostname \"evil.com\" is not inside the appliance's local domains (home, lan, local, internal)"
        );
    }

    #[test]
    fn broken_catalogs_are_refused() {
        let mut c: Value = serde_json::from_str(EMBEDDED).unwrap();
        c["actions"][0]["params"]["additionalProperties"] = json!(true);
        let err = Catalog::from_json(&serde_json::to_vec(&c).unwrap()).unwrap_err().to_string();
        assert!(err.contains("users.add") && err.contains("additionalProperties"), "{err}");
        let mut c: Value = serde_json::from_str(EMBEDDED).unwrap();
        c["actions"][0]["example_params"] = json!({ "username": "Bad Name" });
        assert!(Catalog::from_json(&serde_json::to_vec(&c).unwrap()).is_err());
    }
}
