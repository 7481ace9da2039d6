//! Answers about the customer's own appliances from their latest facts: online or not and
//! since when, disk space, memory, addresses, uptime.

use time::OffsetDateTime;

use super::knowledge;
use super::lang::Lang;
use super::{ApplianceFacts, Context, TaskFacts, Usage};

/// What a question asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Topic {
    Status,
    Disk,
    Memory,
    Address,
    Uptime,
    /// "is my box ok?": everything at once, with its recent tasks and a verdict.
    Health,
}

/// The topics a question (lower-case words joined by spaces, see [`super::text::joined`])
/// asks about.
pub(crate) fn topics(words: &str) -> Vec<Topic> {
    let has = |list: &[&str]| list.iter().any(|w| words.contains(&format!(" {w} ")));
    let device = has(&["appliance", "box", "device", "hearth", "it", "server", "system", "machine"]);
    let mut t = Vec::new();
    if (device || has(&["everything", "all"]))
        && has(&[
            "ok",
            "okay",
            "alright",
            "all right",
            "fine",
            "healthy",
            "health",
            "doing",
            "problem",
            "problems",
            "issues",
            "wrong",
            "good shape",
            "everything",
        ])
        && !has(&["set up", "setup"])
    {
        return vec![Topic::Health];
    }
    if has(&[
        "online",
        "offline",
        "status",
        "connected",
        "disconnected",
        "reachable",
        "unreachable",
        "alive",
        "last seen",
    ]) || (device
        && has(&["up", "down", "working", "running", "is it on", "turned on", "switched on"])
        && !has(&["set up", "setup"]))
    {
        t.push(Topic::Status);
    }
    if has(&["disk", "disks", "space", "storage", "capacity", "full"]) {
        t.push(Topic::Disk);
    }
    if has(&["memory", "ram"]) {
        t.push(Topic::Memory);
    }
    if has(&["ip", "ip address", "addresses"]) || (has(&["address"]) && !has(&["mail", "email", "e-mail", "alias"])) {
        t.push(Topic::Address);
    }
    if has(&["uptime", "how long has", "since when", "last reboot", "last rebooted"]) {
        t.push(Topic::Uptime);
    }
    t
}

/// One paragraph per appliance (or only the one named), topic by topic; when a status
/// question finds an appliance offline, the offline article follows.
pub(crate) fn answer(ctx: &Context, topics: &[Topic], only: Option<&ApplianceFacts>, lang: Lang) -> String {
    if ctx.appliances.is_empty() {
        return lang
            .pick(
                "You have no appliance yet. Once it is plugged in and set up, I can tell you how it is doing.",
                "Sie haben noch kein Gerät. Sobald es angeschlossen und eingerichtet ist, kann ich Ihnen sagen, wie \
                 es ihm geht.",
                "Todavía no tiene ningún equipo. En cuanto esté conectado y configurado, podré decirle cómo está.",
            )
            .into();
    }
    let list: Vec<&ApplianceFacts> = match only {
        Some(a) => vec![a],
        None => ctx.appliances.iter().collect(),
    };
    let now = OffsetDateTime::now_utc();
    let mut lines = Vec::new();
    for a in &list {
        for topic in topics {
            if *topic == Topic::Health {
                lines.push(health(a, &ctx.recent_tasks, now, lang));
            } else {
                lines.push(sentence(a, *topic, now, lang));
            }
        }
    }
    let mut out = lines.join("\n");
    let status = topics.contains(&Topic::Status) || topics.contains(&Topic::Health);
    if status && list.iter().any(|a| a.status != "online") {
        if let Some(article) = knowledge::by_slug("appliance-offline") {
            out.push_str(&format!("\n\n**{}**\n\n{}", article.title, article.body));
        }
    }
    out
}

/// Status, disk, memory and uptime of one appliance, its recent tasks in words, and a
/// verdict: fine, or what needs attention.
fn health(a: &ApplianceFacts, tasks: &[TaskFacts], now: OffsetDateTime, lang: Lang) -> String {
    let mut parts: Vec<String> =
        [Topic::Status, Topic::Disk, Topic::Memory, Topic::Uptime].iter().map(|t| sentence(a, *t, now, lang)).collect();
    let mut worries = Vec::new();
    if a.status != "online" {
        worries.push(lang.pick("it is not online", "es ist nicht online", "no está en línea"));
    }
    if a.disk.is_some_and(|u| used(u) >= 90) {
        worries.push(lang.pick("its disk is almost full", "sein Speicher ist fast voll", "su disco está casi lleno"));
    }
    let mine: Vec<&TaskFacts> = tasks.iter().filter(|t| t.appliance_id == a.id).take(5).collect();
    if !mine.is_empty() {
        parts.push(lang.pick("Recent tasks:", "Letzte Aufgaben:", "Tareas recientes:").to_string());
        for t in &mine {
            let when = ago(now - t.at, lang);
            let words = super::vet::task_words(&t.action, &t.params, &t.status, lang);
            parts.push(format!("- {} ({when})", words.trim_end_matches('.')));
        }
        if mine.iter().any(|t| matches!(t.status.as_str(), "failed" | "timed_out")) {
            worries.push(lang.pick(
                "a recent task did not succeed",
                "eine Aufgabe ist zuletzt fehlgeschlagen",
                "una tarea reciente no salió bien",
            ));
        }
    }
    let verdict = if worries.is_empty() {
        lang.pick("Everything looks fine.", "Alles sieht gut aus.", "Todo parece estar bien.").to_string()
    } else {
        format!("{} {}.", lang.pick("Needs attention:", "Bitte beachten:", "Atención:"), worries.join("; "))
    };
    format!("{verdict}\n{}", parts.join("\n"))
}

fn sentence(a: &ApplianceFacts, topic: Topic, now: OffsetDateTime, lang: Lang) -> String {
    match lang {
        Lang::En => sentence_en(a, topic, now),
        Lang::De | Lang::Es => sentence_other(a, topic, now, lang),
    }
}

fn sentence_other(a: &ApplianceFacts, topic: Topic, now: OffsetDateTime, lang: Lang) -> String {
    let name = &a.name;
    let de = lang == Lang::De;
    match topic {
        Topic::Status | Topic::Health => {
            let seen = a
                .last_seen
                .map(|t| format!(" ({} {})", if de { "letzte Meldung" } else { "último informe" }, ago(now - t, lang)))
                .unwrap_or_default();
            match (a.status.as_str(), de) {
                ("online", true) => format!("„{name}“ ist online{seen}."),
                ("online", false) => format!("«{name}» está en línea{seen}."),
                ("offline", true) => format!("„{name}“ ist offline{seen}."),
                ("offline", false) => format!("«{name}» está desconectado{seen}."),
                (_, true) => format!("„{name}“ hat sich noch nicht verbunden."),
                (_, false) => format!("«{name}» todavía no se ha conectado."),
            }
        }
        Topic::Disk => match (a.disk, de) {
            (Some(u), true) => format!(
                "„{name}“ hat {} von {} auf der Systemplatte frei ({}% belegt).",
                size(u.available_bytes),
                size(u.total_bytes),
                used(u)
            ),
            (Some(u), false) => format!(
                "«{name}» tiene {} libres de {} en su disco de sistema ({}% usado).",
                size(u.available_bytes),
                size(u.total_bytes),
                used(u)
            ),
            (None, true) => format!("Für „{name}“ habe ich noch keine Zahlen zum Speicher."),
            (None, false) => format!("Todavía no tengo datos del disco de «{name}»."),
        },
        Topic::Memory => match (a.memory, de) {
            (Some(u), true) => {
                format!("„{name}“ hat {} von {} Arbeitsspeicher frei.", size(u.available_bytes), size(u.total_bytes))
            }
            (Some(u), false) => {
                format!("«{name}» tiene {} de {} de memoria disponibles.", size(u.available_bytes), size(u.total_bytes))
            }
            (None, true) => format!("Für „{name}“ habe ich noch keine Zahlen zum Arbeitsspeicher."),
            (None, false) => format!("Todavía no tengo datos de memoria de «{name}»."),
        },
        Topic::Address => match (a.addresses.as_slice(), de) {
            ([], true) => {
                format!("Die Adresse von „{name}“ kenne ich nicht; im Heimnetz ist es meist als „{name}“ erreichbar.")
            }
            ([], false) => {
                format!("No conozco la dirección de «{name}»; en su red suele responder a su nombre, «{name}».")
            }
            (list, true) => format!("„{name}“ hat die Adresse {}.", list.join(", ")),
            (list, false) => format!("«{name}» tiene la dirección {}.", list.join(", ")),
        },
        Topic::Uptime => match (a.uptime_s, de) {
            (Some(s), true) => format!("„{name}“ läuft seit {} ohne Neustart.", duration(s, lang)),
            (Some(s), false) => format!("«{name}» lleva {} funcionando desde el último reinicio.", duration(s, lang)),
            (None, true) => format!("Ich weiß nicht, wie lange „{name}“ schon läuft."),
            (None, false) => format!("No sé cuánto tiempo lleva funcionando «{name}»."),
        },
    }
}

fn sentence_en(a: &ApplianceFacts, topic: Topic, now: OffsetDateTime) -> String {
    let name = &a.name;
    match topic {
        Topic::Status | Topic::Health => {
            let seen = a.last_seen.map(|t| format!(" (last report {})", ago(now - t, Lang::En))).unwrap_or_default();
            match a.status.as_str() {
                "online" => format!("“{name}” is online{seen}."),
                "offline" => format!("“{name}” is offline{seen}."),
                _ => format!("“{name}” has not connected yet."),
            }
        }
        Topic::Disk => match a.disk {
            Some(u) => format!(
                "“{name}” has {} free of {} on its system disk ({}% used).",
                size(u.available_bytes),
                size(u.total_bytes),
                used(u)
            ),
            None => format!("I have no disk figures for “{name}” yet."),
        },
        Topic::Memory => match a.memory {
            Some(u) => {
                format!("“{name}” has {} of its {} of memory available.", size(u.available_bytes), size(u.total_bytes))
            }
            None => format!("I have no memory figures for “{name}” yet."),
        },
        Topic::Address => match a.addresses.as_slice() {
            [] => format!(
                "I don't know the address of “{name}”; on your home network it usually answers to its name, “{name}”."
            ),
            list => format!("“{name}” has the address {}.", list.join(", ")),
        },
        Topic::Uptime => match a.uptime_s {
            Some(s) => format!("“{name}” has been running for {} since its last restart.", duration(s, Lang::En)),
            None => format!("I don't know how long “{name}” has been running."),
        },
    }
}

fn used(u: Usage) -> u64 {
    if u.total_bytes == 0 {
        return 0;
    }
    (u.total_bytes.saturating_sub(u.available_bytes)) * 100 / u.total_bytes
}

fn size(bytes: u64) -> String {
    const GB: f64 = 1e9;
    const MB: f64 = 1e6;
    let b = bytes as f64;
    if b >= GB {
        format!("{:.1} GB", b / GB)
    } else {
        format!("{:.0} MB", b / MB)
    }
}

fn ago(d: time::Duration, lang: Lang) -> String {
    match (d.whole_seconds().max(0) as u64, lang) {
        (0..=9, _) => lang.pick("just now", "gerade eben", "hace un momento").into(),
        (s, Lang::En) => format!("{} ago", duration(s, lang)),
        (s, Lang::De) => format!("vor {}", duration(s, lang)),
        (s, Lang::Es) => format!("hace {}", duration(s, lang)),
    }
}

fn duration(s: u64, lang: Lang) -> String {
    let (n, unit) = match s {
        0..=119 => (s, 0),
        120..=7199 => (s / 60, 1),
        7200..=172_799 => (s / 3600, 2),
        _ => (s / 86_400, 3),
    };
    let one = n == 1;
    let word = match (lang, unit, one) {
        (Lang::En, 0, _) => "second",
        (Lang::En, 1, _) => "minute",
        (Lang::En, 2, _) => "hour",
        (Lang::En, _, _) => "day",
        (Lang::De, 0, true) => "Sekunde",
        (Lang::De, 0, false) => "Sekunden",
        (Lang::De, 1, true) => "Minute",
        (Lang::De, 1, false) => "Minuten",
        (Lang::De, 2, true) => "Stunde",
        (Lang::De, 2, false) => "Stunden",
        (Lang::De, _, true) => "Tag",
        (Lang::De, _, false) => "Tagen",
        (Lang::Es, 0, _) => "segundo",
        (Lang::Es, 1, _) => "minuto",
        (Lang::Es, 2, _) => "hora",
        (Lang::Es, _, _) => "día",
    };
    let plural = if !one && lang != Lang::De { "s" } else { "" };
    format!("{n} {word}{plural}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assistant::text::{joined, tokenize};
    use crate::assistant::AssistantConfig;
    use hearth_protocol::ApplianceId;

    fn topics_of(q: &str) -> Vec<Topic> {
        topics(&joined(&tokenize(q)))
    }

    #[test]
    fn questions_map_to_topics() {
        assert_eq!(topics_of("Is my device online?"), [Topic::Status]);
        assert_eq!(topics_of("is the box up?"), [Topic::Status]);
        assert_eq!(topics_of("How do I set up email on my phone?"), []);
        assert_eq!(topics_of("how much disk space is left"), [Topic::Disk]);
        assert_eq!(topics_of("what's the IP address of my appliance"), [Topic::Address]);
        assert_eq!(topics_of("which address should mail go to"), []);
    }

    #[test]
    fn answers_use_the_facts() {
        let a = |status: &str| ApplianceFacts {
            id: ApplianceId::new(),
            name: "kitchen".into(),
            status: status.into(),
            last_seen: Some(OffsetDateTime::now_utc() - time::Duration::minutes(5)),
            agent_version: None,
            addresses: vec!["192.168.1.2".into()],
            disk: Some(Usage { total_bytes: 32_000_000_000, available_bytes: 8_000_000_000 }),
            memory: None,
            uptime_s: Some(90_000),
        };
        let ctx = Context::new(vec![a("online")], &AssistantConfig::default());
        let s = answer(&ctx, &[Topic::Status, Topic::Disk, Topic::Address, Topic::Uptime], None, Lang::En);
        assert!(s.contains("“kitchen” is online (last report 5 minutes ago)"), "{s}");
        assert!(s.contains("8.0 GB free of 32.0 GB") && s.contains("75% used"), "{s}");
        assert!(s.contains("192.168.1.2") && s.contains("25 hours"), "{s}");
        let ctx = Context::new(vec![a("offline")], &AssistantConfig::default());
        let s = answer(&ctx, &[Topic::Status], None, Lang::En);
        assert!(s.contains("is offline") && s.contains("When your appliance is offline"), "{s}");
        let none = Context::new(vec![], &AssistantConfig::default());
        assert!(answer(&none, &[Topic::Status], None, Lang::En).contains("no appliance yet"));
    }
}
