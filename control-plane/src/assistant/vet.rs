//! The one path from a suggested task — by the rules backend or by the model, both
//! untrusted — to a [`Proposal`]: the action must be in the catalog, the parameters must
//! pass `hearth_protocol::catalog`'s validator (the task API's own), and the appliance must
//! be one of this tenant's. Anything else becomes a polite refusal or a clarifying
//! question that says what is wrong, never a proposal.

use hearth_protocol::catalog::{Action, Catalog, Rejection, Risk};
use serde_json::{Map, Value};

use super::text::shorten;
use super::{ApplianceFacts, Context, Proposal};

/// A proposal and the sentence that presents it, or the reply that explains why there is
/// none.
pub(crate) fn vet(
    ctx: &Context,
    action: &str,
    params: &Value,
    appliance: Option<&str>,
) -> Result<(Proposal, String), String> {
    let catalog = Catalog::embedded();
    let Some(a) = catalog.action(action) else {
        return Err(format!("Sorry, that is not something I can do. {}", capabilities()));
    };
    let Some(params) = params.as_object() else {
        return Err(format!("Sorry, I can't do that: the details for “{}” are not in a form I can use.", a.id));
    };
    let target = resolve(ctx, appliance)?;
    let (a, params) = catalog.validate(&a.id, params, &ctx.policy).map_err(|r| rejection_reply(a, &r))?;
    let needs_confirmation = a.risk == Risk::High || ctx.confirm_low_risk;
    let summary = summary(a, &params, target, needs_confirmation);
    Ok((Proposal { action: a.id.clone(), params, appliance_id: target.id, risk: a.risk, needs_confirmation }, summary))
}

/// The appliance a proposal is for: the one named (by id or name), else the
/// conversation's current one, else the tenant's only one. Never another tenant's: only
/// `ctx.appliances` are searched.
fn resolve<'a>(ctx: &'a Context, named: Option<&str>) -> Result<&'a ApplianceFacts, String> {
    if let Some(n) = named.map(str::trim).filter(|n| !n.is_empty()) {
        return ctx
            .appliances
            .iter()
            .find(|a| a.id.to_string() == n.to_ascii_lowercase() || a.name.eq_ignore_ascii_case(n))
            .ok_or_else(|| {
                format!(
                    "Sorry, I can only act on your own appliances, and none of them is “{}”. {}",
                    shorten(n, 64),
                    yours(ctx)
                )
            });
    }
    if let Some(a) = ctx.current_appliance.and_then(|id| ctx.appliance(id)) {
        return Ok(a);
    }
    match ctx.appliances.as_slice() {
        [] => Err(
            "You have no appliance yet, so there is nothing I can change. Once your appliance is set up, ask me again."
                .into(),
        ),
        [only] => Ok(only),
        _ => Err(format!(
            "Which appliance should I do that on? {} Say, for example, “… on {}”.",
            yours(ctx),
            ctx.appliances[0].name
        )),
    }
}

fn yours(ctx: &Context) -> String {
    match ctx.appliances.as_slice() {
        [] => "You have no appliance yet.".into(),
        list => {
            format!("Your appliances: {}.", list.iter().map(|a| format!("“{}”", a.name)).collect::<Vec<_>>().join(", "))
        }
    }
}

fn rejection_reply(a: &Action, r: &Rejection) -> String {
    let what = lower_first(a.description.trim_end_matches('.'));
    match (r.rule, r.param.as_deref()) {
        ("missing_parameter", Some(p)) => {
            let desc = a.params.pointer(&format!("/properties/{p}/description")).and_then(Value::as_str);
            match desc {
                Some(d) => {
                    format!("I can {what}, but I need one more detail: the {} ({d}). What should it be?", label(p))
                }
                None => format!("I can {what}, but I need one more detail: the {}. What should it be?", label(p)),
            }
        }
        _ => format!("Sorry, I can't do that: {}.", r.message),
    }
}

/// How a parameter is called in a sentence.
fn label(param: &str) -> String {
    match param {
        "username" => "user name".into(),
        "ip" => "IP address".into(),
        "hostname" | "common_name" => "host name".into(),
        "alt_names" => "other names".into(),
        "servers" => "DNS servers".into(),
        "name" => "name".into(),
        other => other.replace('_', " "),
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => shorten(s, 128),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        Value::Array(items) => items.iter().map(show).collect::<Vec<_>>().join(", "),
        other => shorten(&other.to_string(), 128),
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

fn summary(a: &Action, params: &Map<String, Value>, target: &ApplianceFacts, needs_confirmation: bool) -> String {
    let what = lower_first(a.description.trim_end_matches('.'));
    let details: Vec<String> = params.iter().map(|(k, v)| format!("{}: {}", label(k), show(v))).collect();
    let mut s = format!("I can do this on “{}”: {what}", target.name);
    if !details.is_empty() {
        s.push_str(&format!(" ({})", details.join("; ")));
    }
    s.push('.');
    if target.status != "online" {
        let state = if target.status == "never_seen" { "not connected yet" } else { "offline" };
        s.push_str(&format!(" “{}” is {state} right now; the task will run when it is back online.", target.name));
    }
    s.push_str(match (a.risk, needs_confirmation) {
        (Risk::High, _) => " This is a high-risk change: please confirm that you want it.",
        (Risk::Low, true) => " Shall I go ahead? Please confirm.",
        (Risk::Low, false) => " I'll start it right away.",
    });
    s
}

/// What the assistant can do, from the catalog's descriptions.
pub(crate) fn capabilities() -> String {
    let list: Vec<String> = Catalog::embedded()
        .actions
        .iter()
        .map(|a| format!("- {}", lower_first(a.description.trim_end_matches('.'))))
        .collect();
    format!("Here is what I can do for you:\n{}", list.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assistant::{AssistantConfig, Usage};
    use hearth_protocol::ApplianceId;
    use serde_json::json;

    fn appliance(name: &str, status: &str) -> ApplianceFacts {
        ApplianceFacts {
            id: ApplianceId::new(),
            name: name.into(),
            status: status.into(),
            last_seen: None,
            agent_version: None,
            addresses: vec![],
            disk: Some(Usage { total_bytes: 1, available_bytes: 1 }),
            memory: None,
            uptime_s: None,
        }
    }

    fn ctx(names: &[&str]) -> Context {
        Context::new(names.iter().map(|n| appliance(n, "online")).collect(), &AssistantConfig::default())
    }

    #[test]
    fn a_valid_proposal_is_normalised_and_needs_confirmation() {
        let c = ctx(&["kitchen"]);
        let (p, s) = vet(&c, "dns.record.add", &json!({"hostname": "NAS.Home.", "ip": "10.0.0.5"}), None).unwrap();
        assert_eq!(p.params["hostname"], "nas.home");
        assert_eq!((p.appliance_id, p.risk, p.needs_confirmation), (c.appliances[0].id, Risk::Low, true));
        assert!(s.contains("kitchen") && s.contains("nas.home") && s.contains("confirm"), "{s}");

        let mut c = c;
        c.confirm_low_risk = false;
        let (p, s) = vet(&c, "shares.add", &json!({"name": "Photos"}), Some("KITCHEN")).unwrap();
        assert!(!p.needs_confirmation && s.contains("right away"), "{s}");
        assert_eq!(p.params["read_only"], json!(false));
        let (p, s) = vet(&c, "appliance.reboot", &json!({}), None).unwrap();
        assert!(p.needs_confirmation && s.contains("high-risk"), "{s}");
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let c = ctx(&["kitchen"]);
        let refuse =
            |action: &str, params: Value, appliance: Option<&str>| vet(&c, action, &params, appliance).unwrap_err();
        assert!(refuse("system.exec", json!({"cmd": "id"}), None).contains("not something I can do"));
        let r = refuse("users.add", json!({"username": "eve", "groups": ["sudo"]}), None);
        assert!(r.contains("privileged group"), "{r}");
        let r = refuse("shares.add", json!({"name": "../../etc"}), None);
        assert!(r.contains("not a valid share name"), "{r}");
        let r = refuse("users.add", json!({}), None);
        assert!(r.contains("user name") && r.ends_with("What should it be?"), "{r}");
        let r = refuse("users.add", json!({"username": "bob", "shell": "/bin/sh"}), None);
        assert!(r.contains("not a parameter"), "{r}");
        let r = refuse("users.add", json!(["bob"]), None);
        assert!(r.contains("not in a form"), "{r}");
        let other = ApplianceId::new().to_string();
        let r = refuse("appliance.reboot", json!({}), Some(&other));
        assert!(r.contains("only act on your own appliances") && r.contains("kitchen"), "{r}");
    }

    #[test]
    fn the_appliance_is_never_guessed_among_several() {
        let mut c = ctx(&["kitchen", "office"]);
        let r = vet(&c, "appliance.reboot", &json!({}), None).unwrap_err();
        assert!(r.contains("Which appliance") && r.contains("office"), "{r}");
        let (p, _) = vet(&c, "appliance.reboot", &json!({}), Some("office")).unwrap();
        assert_eq!(p.appliance_id, c.appliances[1].id);
        c.current_appliance = Some(c.appliances[0].id);
        assert_eq!(vet(&c, "appliance.reboot", &json!({}), None).unwrap().0.appliance_id, c.appliances[0].id);
        let none = ctx(&[]);
        assert!(vet(&none, "appliance.reboot", &json!({}), None).unwrap_err().contains("no appliance yet"));
    }

    #[test]
    fn offline_appliances_are_mentioned() {
        let c = Context::new(vec![appliance("attic", "offline")], &AssistantConfig::default());
        let (_, s) = vet(&c, "service.restart", &json!({"service": "dns"}), None).unwrap();
        assert!(s.contains("offline right now"), "{s}");
    }
}
