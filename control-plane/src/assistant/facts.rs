//! Answers about the customer's own appliances from their latest facts: online or not and
//! since when, disk space, memory, addresses, uptime.

use time::OffsetDateTime;

use super::knowledge;
use super::{ApplianceFacts, Context, Usage};

/// What a question asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Topic {
    Status,
    Disk,
    Memory,
    Address,
    Uptime,
}

/// The topics a question (lower-case words joined by spaces, see [`super::text::joined`])
/// asks about.
pub(crate) fn topics(words: &str) -> Vec<Topic> {
    let has = |list: &[&str]| list.iter().any(|w| words.contains(&format!(" {w} ")));
    let device = has(&["appliance", "box", "device", "hearth", "it", "server", "system", "machine"]);
    let mut t = Vec::new();
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
pub(crate) fn answer(ctx: &Context, topics: &[Topic], only: Option<&ApplianceFacts>) -> String {
    if ctx.appliances.is_empty() {
        return "You have no appliance yet. Once it is plugged in and set up, I can tell you how it is doing.".into();
    }
    let list: Vec<&ApplianceFacts> = match only {
        Some(a) => vec![a],
        None => ctx.appliances.iter().collect(),
    };
    let now = OffsetDateTime::now_utc();
    let mut lines = Vec::new();
    for a in &list {
        for topic in topics {
            lines.push(sentence(a, *topic, now));
        }
    }
    let mut out = lines.join("\n");
    if topics.contains(&Topic::Status) && list.iter().any(|a| a.status != "online") {
        if let Some(article) = knowledge::by_slug("appliance-offline") {
            out.push_str(&format!("\n\n**{}**\n\n{}", article.title, article.body));
        }
    }
    out
}

fn sentence(a: &ApplianceFacts, topic: Topic, now: OffsetDateTime) -> String {
    let name = &a.name;
    match topic {
        Topic::Status => {
            let seen = a.last_seen.map(|t| format!(" (last report {})", ago(now - t))).unwrap_or_default();
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
            Some(s) => format!("“{name}” has been running for {} since its last restart.", duration(s)),
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

fn ago(d: time::Duration) -> String {
    match d.whole_seconds().max(0) as u64 {
        0..=9 => "just now".into(),
        s => format!("{} ago", duration(s)),
    }
}

fn duration(s: u64) -> String {
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match s {
        0..=119 => plural(s, "second"),
        120..=7199 => plural(s / 60, "minute"),
        7200..=172_799 => plural(s / 3600, "hour"),
        _ => plural(s / 86_400, "day"),
    }
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
        let s = answer(&ctx, &[Topic::Status, Topic::Disk, Topic::Address, Topic::Uptime], None);
        assert!(s.contains("“kitchen” is online (last report 5 minutes ago)"), "{s}");
        assert!(s.contains("8.0 GB free of 32.0 GB") && s.contains("75% used"), "{s}");
        assert!(s.contains("192.168.1.2") && s.contains("25 hours"), "{s}");
        let ctx = Context::new(vec![a("offline")], &AssistantConfig::default());
        let s = answer(&ctx, &[Topic::Status], None);
        assert!(s.contains("is offline") && s.contains("When your appliance is offline"), "{s}");
        let none = Context::new(vec![], &AssistantConfig::default());
        assert!(answer(&none, &[Topic::Status], None).contains("no appliance yet"));
    }
}
