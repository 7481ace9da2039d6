//! The one path from a suggested task — by the rules backend or by the model, both
//! untrusted — to a [`Proposal`]: the action must be in the catalog, the parameters must
//! pass `hearth_protocol::catalog`'s validator (the task API's own), and the appliance must
//! be one of this tenant's. Anything else becomes a polite refusal or a clarifying
//! question that says what is wrong, never a proposal.

use hearth_protocol::catalog::{Action, Catalog, Rejection, Risk};
use serde_json::{Map, Value};

use super::lang::Lang;
use super::text::shorten;
use super::{ApplianceFacts, Context, Proposal};

/// A proposal and the sentence that presents it, or the reply that explains why there is
/// none (in English).
pub(crate) fn vet(
    ctx: &Context,
    action: &str,
    params: &Value,
    appliance: Option<&str>,
) -> Result<(Proposal, String), String> {
    vet_in(ctx, Lang::En, action, params, appliance)
}

/// [`vet`], answering in `lang`.
pub(crate) fn vet_in(
    ctx: &Context,
    lang: Lang,
    action: &str,
    params: &Value,
    appliance: Option<&str>,
) -> Result<(Proposal, String), String> {
    let catalog = Catalog::embedded();
    let Some(a) = catalog.action(action) else {
        return Err(format!(
            "{} {}",
            lang.pick(
                "Sorry, that is not something I can do.",
                "Das kann ich leider nicht tun.",
                "Lo siento, eso no puedo hacerlo."
            ),
            capabilities_in(lang)
        ));
    };
    let Some(params) = params.as_object() else {
        return Err(format!("Sorry, I can't do that: the details for “{}” are not in a form I can use.", a.id));
    };
    let target = resolve(ctx, appliance)?;
    let (a, params) = catalog.validate(&a.id, params, &ctx.policy).map_err(|r| rejection_reply(a, &r, lang))?;
    let needs_confirmation = a.risk == Risk::High || ctx.confirm_low_risk;
    let summary = summary(a, &params, target, needs_confirmation, lang);
    let described = describe(&a.id, &params, lang);
    Ok((
        Proposal {
            action: a.id.clone(),
            params,
            appliance_id: target.id,
            risk: a.risk,
            needs_confirmation,
            summary: described,
            language: lang,
        },
        summary,
    ))
}

/// What an action does, in `lang` (the catalog's own description in English).
fn description(a: &Action, lang: Lang) -> String {
    let (de, es) = match a.id.as_str() {
        "users.add" => ("ein Benutzerkonto auf dem Gerät anlegen", "crear una cuenta de usuario en el equipo"),
        "users.remove" => ("ein Benutzerkonto vom Gerät löschen", "eliminar una cuenta de usuario del equipo"),
        "users.reset_password" => (
            "einem Benutzer ein neues vorläufiges Passwort geben, das beim nächsten Anmelden geändert werden muss",
            "dar a un usuario una contraseña temporal nueva que deberá cambiar al iniciar sesión",
        ),
        "shares.add" => ("eine Dateifreigabe (Samba) anlegen", "crear una carpeta compartida (Samba)"),
        "shares.remove" => (
            "eine Dateifreigabe entfernen (die Dateien bleiben auf der Platte)",
            "quitar una carpeta compartida (los archivos se quedan en el disco)",
        ),
        "dns.record.add" => (
            "einen lokalen DNS-Namen anlegen oder ändern, der auf eine Adresse zeigt",
            "añadir o cambiar un nombre DNS local que apunta a una dirección",
        ),
        "dns.record.remove" => ("einen lokalen DNS-Namen entfernen", "quitar un nombre DNS local"),
        "dns.forwarders.set" => (
            "die DNS-Server festlegen, an die das Gerät Anfragen weitergibt",
            "fijar los servidores DNS a los que el equipo reenvía las consultas",
        ),
        "mail.alias.add" => (
            "einen Mail-Alias anlegen, der an einen lokalen Benutzer oder eine E-Mail-Adresse zustellt",
            "añadir un alias de correo que entrega a un usuario local o a una dirección",
        ),
        "mail.alias.remove" => ("einen Mail-Alias entfernen", "quitar un alias de correo"),
        "pki.cert.issue" => (
            "ein Zertifikat der lokalen CA des Geräts für einen lokalen Namen ausstellen",
            "emitir un certificado de la CA local del equipo para un nombre local",
        ),
        "service.restart" => ("einen Dienst des Geräts neu starten", "reiniciar uno de los servicios del equipo"),
        "appliance.reboot" => ("das Gerät neu starten", "reiniciar el equipo"),
        _ => ("", ""),
    };
    match lang {
        Lang::De if !de.is_empty() => de.to_string(),
        Lang::Es if !es.is_empty() => es.to_string(),
        _ => lower_first(a.description.trim_end_matches('.')),
    }
}

/// A proposal in a few words: what it does and its details.
pub(crate) fn describe(action: &str, params: &Map<String, Value>, lang: Lang) -> String {
    let Some(a) = Catalog::embedded().action(action) else { return shorten(action, 64) };
    let what = upper_first(&description(a, lang));
    let details: Vec<String> = params
        .iter()
        .filter(|(_, v)| !matches!(v, Value::Bool(false)))
        .map(|(k, v)| format!("{}: {}", label(k, lang), show(v, lang)))
        .collect();
    if details.is_empty() {
        what
    } else {
        format!("{what} ({})", details.join("; "))
    }
}

fn text_param<'a>(params: &'a Map<String, Value>, key: &str) -> &'a str {
    params.get(key).and_then(Value::as_str).unwrap_or("?")
}

/// What a finished task did, in words a household understands ("Emma can now sign in"),
/// or that it did not work.
pub(crate) fn outcome(action: &str, params: &Map<String, Value>, succeeded: bool, lang: Lang) -> String {
    let p = |k: &str| shorten(text_param(params, k), 64);
    if !succeeded {
        let what = describe(action, params, lang);
        return match lang {
            Lang::En => format!(
                "That did not work: {what}. Nothing else was changed; the technical log below says why. You can try \
                 again or ask us for help."
            ),
            Lang::De => format!(
                "Das hat nicht geklappt: {what}. Sonst wurde nichts geändert; das technische Protokoll unten nennt \
                 den Grund."
            ),
            Lang::Es => format!(
                "No ha funcionado: {what}. No se ha cambiado nada más; el registro técnico de abajo explica por qué."
            ),
        };
    }
    let name = || upper_first(&p("username"));
    match (lang, action) {
        (Lang::En, "users.add") => format!("{} can now sign in.", name()),
        (Lang::En, "users.remove") => format!("The account “{}” is gone; it can no longer sign in.", p("username")),
        (Lang::En, "users.reset_password") => {
            format!("{} has a new temporary password and will choose their own at the next sign-in.", name())
        }
        (Lang::En, "shares.add") => format!("The shared folder “{}” is ready to use.", p("name")),
        (Lang::En, "shares.remove") => {
            format!("The folder “{}” is no longer shared; its files are still on the disk.", p("name"))
        }
        (Lang::En, "dns.record.add") => {
            format!("{} now leads to {} on your home network.", p("hostname"), p("ip"))
        }
        (Lang::En, "dns.record.remove") => format!("{} no longer has a local address.", p("hostname")),
        (Lang::En, "dns.forwarders.set") => {
            format!("Your appliance now looks up internet names through {}.", show(&params["servers"], lang))
        }
        (Lang::En, "mail.alias.add") => format!("Mail for {} now goes to {}.", p("alias"), p("destination")),
        (Lang::En, "mail.alias.remove") => format!("Mail for {} is no longer delivered anywhere.", p("alias")),
        (Lang::En, "pki.cert.issue") => format!("A certificate for {} is ready.", p("common_name")),
        (Lang::En, "service.restart") => format!("The {} service has been restarted.", p("service")),
        (Lang::En, "appliance.reboot") => "Your appliance has restarted.".into(),
        (Lang::De, "users.add") => format!("{} kann sich jetzt anmelden.", name()),
        (Lang::Es, "users.add") => format!("{} ya puede iniciar sesión.", name()),
        (Lang::De, _) => format!("Erledigt: {}.", describe(action, params, lang)),
        (Lang::Es, _) => format!("Hecho: {}.", describe(action, params, lang)),
        _ => format!("Done: {}.", describe(action, params, lang)),
    }
}

/// A task of the appliance's history in words: its outcome when finished, else what it is
/// doing.
pub(crate) fn task_words(action: &str, params: &Map<String, Value>, status: &str, lang: Lang) -> String {
    match status {
        "succeeded" => outcome(action, params, true, lang),
        "failed" | "timed_out" => outcome(action, params, false, lang),
        "cancelled" => {
            format!("{} — {}", describe(action, params, lang), lang.pick("cancelled", "abgebrochen", "cancelada"))
        }
        _ => format!("{} — {}", describe(action, params, lang), lang.pick("in progress", "läuft noch", "en curso")),
    }
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

fn rejection_reply(a: &Action, r: &Rejection, lang: Lang) -> String {
    let what = description(a, lang);
    match (r.rule, r.param.as_deref(), lang) {
        ("missing_parameter", Some(p), Lang::En) => {
            let desc = a.params.pointer(&format!("/properties/{p}/description")).and_then(Value::as_str);
            match desc {
                Some(d) => format!(
                    "I can {what}, but I need one more detail: the {} ({d}). What should it be?",
                    label(p, lang)
                ),
                None => format!("I can {what}, but I need one more detail: the {}. What should it be?", label(p, lang)),
            }
        }
        ("missing_parameter", Some(p), Lang::De) => {
            format!("Ich kann {what}, brauche aber noch eine Angabe: {}. Wie soll sie lauten?", label(p, lang))
        }
        ("missing_parameter", Some(p), Lang::Es) => {
            format!("Puedo {what}, pero me falta un dato: {}. ¿Cuál debe ser?", label(p, lang))
        }
        (_, _, Lang::En) => format!("Sorry, I can't do that: {}.", r.message),
        (_, _, Lang::De) => format!("Das geht leider nicht: {}.", r.message),
        (_, _, Lang::Es) => format!("Lo siento, no puedo hacerlo: {}.", r.message),
    }
}

/// How a parameter is called in a sentence.
fn label(param: &str, lang: Lang) -> String {
    match lang {
        Lang::En => label_en(param),
        Lang::De => match param {
            "username" => "Benutzername".into(),
            "full_name" => "vollständiger Name".into(),
            "groups" => "Gruppen".into(),
            "name" => "Name".into(),
            "users" => "Benutzer".into(),
            "read_only" => "nur lesen".into(),
            "hostname" | "common_name" => "Hostname".into(),
            "ip" => "IP-Adresse".into(),
            "servers" => "DNS-Server".into(),
            "alias" => "Alias".into(),
            "destination" => "Ziel".into(),
            "alt_names" => "weitere Namen".into(),
            "service" => "Dienst".into(),
            other => other.replace('_', " "),
        },
        Lang::Es => match param {
            "username" => "nombre de usuario".into(),
            "full_name" => "nombre completo".into(),
            "groups" => "grupos".into(),
            "name" => "nombre".into(),
            "users" => "usuarios".into(),
            "read_only" => "solo lectura".into(),
            "hostname" | "common_name" => "nombre de host".into(),
            "ip" => "dirección IP".into(),
            "servers" => "servidores DNS".into(),
            "alias" => "alias".into(),
            "destination" => "destino".into(),
            "alt_names" => "otros nombres".into(),
            "service" => "servicio".into(),
            other => other.replace('_', " "),
        },
    }
}

fn label_en(param: &str) -> String {
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

fn show(v: &Value, lang: Lang) -> String {
    match v {
        Value::String(s) => shorten(s, 128),
        Value::Bool(true) => lang.pick("yes", "ja", "sí").into(),
        Value::Bool(false) => "no".into(),
        Value::Array(items) => items.iter().map(|i| show(i, lang)).collect::<Vec<_>>().join(", "),
        other => shorten(&other.to_string(), 128),
    }
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

fn summary(
    a: &Action,
    params: &Map<String, Value>,
    target: &ApplianceFacts,
    needs_confirmation: bool,
    lang: Lang,
) -> String {
    let what = description(a, lang);
    let details: Vec<String> = params.iter().map(|(k, v)| format!("{}: {}", label(k, lang), show(v, lang))).collect();
    let name = &target.name;
    let mut s = match lang {
        Lang::En => format!("I can do this on “{name}”: {what}"),
        Lang::De => format!("Das kann ich auf „{name}“ tun: {what}"),
        Lang::Es => format!("Puedo hacer esto en «{name}»: {what}"),
    };
    if !details.is_empty() {
        s.push_str(&format!(" ({})", details.join("; ")));
    }
    s.push('.');
    if target.status != "online" {
        s.push_str(&match lang {
            Lang::En => {
                let state = if target.status == "never_seen" { "not connected yet" } else { "offline" };
                format!(" “{name}” is {state} right now; the task will run when it is back online.")
            }
            Lang::De => {
                format!(" „{name}“ ist gerade nicht verbunden; die Aufgabe läuft, sobald es wieder online ist.")
            }
            Lang::Es => format!(" «{name}» no está conectado ahora; la tarea se hará cuando vuelva a estar en línea."),
        });
    }
    s.push_str(match (a.risk, needs_confirmation) {
        (Risk::High, _) => lang.pick(
            " This is a high-risk change: please confirm that you want it.",
            " Das ist eine riskante Änderung: Bitte bestätigen Sie, dass Sie sie wollen.",
            " Es un cambio de alto riesgo: confirme que lo quiere.",
        ),
        (Risk::Low, true) => lang.pick(
            " Shall I go ahead? Please confirm.",
            " Soll ich das tun? Bitte bestätigen Sie.",
            " ¿Lo hago? Confírmelo, por favor.",
        ),
        (Risk::Low, false) => {
            lang.pick(" I'll start it right away.", " Ich starte es sofort.", " Lo empiezo ahora mismo.")
        }
    });
    s
}

/// What the assistant can do, from the catalog's descriptions.
pub(crate) fn capabilities() -> String {
    capabilities_in(Lang::En)
}

/// [`capabilities`] in `lang`.
pub(crate) fn capabilities_in(lang: Lang) -> String {
    let list: Vec<String> = Catalog::embedded().actions.iter().map(|a| format!("- {}", description(a, lang))).collect();
    let head = lang.pick("Here is what I can do for you:", "Das kann ich für Sie tun:", "Esto es lo que puedo hacer:");
    format!("{head}\n{}", list.join("\n"))
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
