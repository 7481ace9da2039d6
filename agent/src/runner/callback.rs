//! Turning the `hearth_events` callback's stdout lines into task events.
//!
//! The callback (`ansible/callback_plugins/hearth_events.py`) prints one JSON object per
//! line (see "Running a playbook" in `docs/architecture.md`):
//!
//! | `event` | becomes |
//! |---|---|
//! | `playbook_start` | [`TaskEventKind::Started`] (message: the playbook) |
//! | `task_start` | [`TaskEventKind::TaskStarted`] |
//! | `ok` / `changed` / `skipped` | `TaskOk` / `TaskChanged` / `TaskSkipped` |
//! | `failed` / `unreachable` | `TaskFailed` |
//! | `stats` | the play recap ([`PlayStats`]), not an event |
//!
//! Anything else printed on stdout (a line that is not such an object, or an unknown
//! event) becomes an [`Output`](TaskEventKind::Output) event with the line, cut to
//! [`MAX_OUTPUT_CHARS`].

use hearth_protocol::{PlayStats, TaskEventKind};
use serde_json::Value;

/// Longest `output` event message, in characters.
pub const MAX_OUTPUT_CHARS: usize = 2000;
/// Longest message of any other event, in characters (a task event may hold 8 KiB).
pub const MAX_MESSAGE_CHARS: usize = 2000;
/// Longest Ansible task name kept, in characters.
pub const MAX_TASK_CHARS: usize = 256;

/// One event of a playbook run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayEvent {
    pub kind: TaskEventKind,
    /// The Ansible task (`role : name`), if the line named one.
    pub task: Option<String>,
    pub message: String,
}

/// What one stdout line means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackLine {
    Event(PlayEvent),
    /// The play recap.
    Stats(PlayStats),
}

/// Cuts `s` to at most `max` characters, marking a cut with `…`.
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((cut, _)) => {
            let keep = s[..cut].char_indices().nth(max.saturating_sub(1)).map_or(cut, |(i, _)| i);
            format!("{}…", &s[..keep])
        }
    }
}

fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn count(v: Option<&Value>) -> u32 {
    v.and_then(Value::as_u64).map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

fn output(line: &str) -> CallbackLine {
    CallbackLine::Event(PlayEvent {
        kind: TaskEventKind::Output,
        task: None,
        message: truncate_chars(line, MAX_OUTPUT_CHARS),
    })
}

/// Interprets one stdout line; `None` for a blank line.
pub fn parse_line(line: &str) -> Option<CallbackLine> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return None;
    }
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(line) else {
        return Some(output(line));
    };
    let Some(event) = obj.get("event").and_then(Value::as_str) else {
        return Some(output(line));
    };
    let kind = match event {
        "stats" => {
            return Some(CallbackLine::Stats(PlayStats {
                ok: count(obj.get("ok")),
                changed: count(obj.get("changed")),
                failed: count(obj.get("failed")),
                skipped: count(obj.get("skipped")),
                unreachable: count(obj.get("unreachable")),
            }))
        }
        "playbook_start" => {
            return Some(CallbackLine::Event(PlayEvent {
                kind: TaskEventKind::Started,
                task: None,
                message: truncate_chars(&text(obj.get("playbook")), MAX_MESSAGE_CHARS),
            }))
        }
        "task_start" => TaskEventKind::TaskStarted,
        "ok" => TaskEventKind::TaskOk,
        "changed" => TaskEventKind::TaskChanged,
        "skipped" => TaskEventKind::TaskSkipped,
        "failed" | "unreachable" => TaskEventKind::TaskFailed,
        _ => return Some(output(line)),
    };
    let task = Some(text(obj.get("task"))).filter(|t| !t.is_empty()).map(|t| truncate_chars(&t, MAX_TASK_CHARS));
    let mut message = text(obj.get("msg"));
    if event == "unreachable" && !message.starts_with("unreachable") {
        message = if message.is_empty() { "unreachable".to_string() } else { format!("unreachable: {message}") };
    }
    Some(CallbackLine::Event(PlayEvent { kind, task, message: truncate_chars(&message, MAX_MESSAGE_CHARS) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: TaskEventKind, task: Option<&str>, message: &str) -> Option<CallbackLine> {
        Some(CallbackLine::Event(PlayEvent { kind, task: task.map(str::to_string), message: message.to_string() }))
    }

    #[test]
    fn every_documented_line() {
        use TaskEventKind::*;
        assert_eq!(
            parse_line(r#"{"event": "playbook_start", "playbook": "dns_record_add.yml"}"#),
            event(Started, None, "dns_record_add.yml")
        );
        assert_eq!(
            parse_line(r#"{"event": "task_start", "task": "dns : add the record"}"#),
            event(TaskStarted, Some("dns : add the record"), "")
        );
        for (name, kind) in [("ok", TaskOk), ("changed", TaskChanged), ("skipped", TaskSkipped), ("failed", TaskFailed)]
        {
            let line = format!(r#"{{"event": "{name}", "task": "t", "msg": "m"}}"#);
            assert_eq!(parse_line(&line), event(kind, Some("t"), "m"), "{name}");
        }
        assert_eq!(
            parse_line(r#"{"event": "unreachable", "task": "t", "msg": "no route"}"#),
            event(TaskFailed, Some("t"), "unreachable: no route")
        );
        assert_eq!(
            parse_line(r#"{"event": "stats", "ok": 3, "changed": 1, "failed": 0, "skipped": 2, "unreachable": 0}"#),
            Some(CallbackLine::Stats(PlayStats { ok: 3, changed: 1, failed: 0, skipped: 2, unreachable: 0 }))
        );
    }

    #[test]
    fn anything_else_is_output() {
        use TaskEventKind::Output;
        assert_eq!(parse_line(""), None);
        assert_eq!(parse_line("  \r\n"), None);
        assert_eq!(parse_line("[WARNING]: something"), event(Output, None, "[WARNING]: something"));
        assert_eq!(parse_line("[1, 2]"), event(Output, None, "[1, 2]"));
        assert_eq!(parse_line(r#"{"event": "new_kind"}"#), event(Output, None, r#"{"event": "new_kind"}"#));
        assert_eq!(parse_line(r#"{"x": 1}"#), event(Output, None, r#"{"x": 1}"#));
        let long = "é".repeat(5000);
        let Some(CallbackLine::Event(e)) = parse_line(&long) else { panic!("output expected") };
        assert_eq!(e.message.chars().count(), MAX_OUTPUT_CHARS);
        assert!(e.message.ends_with('…'));
    }

    #[test]
    fn odd_field_types_do_not_break_it() {
        assert_eq!(
            parse_line(r#"{"event": "failed", "task": null, "msg": ["a", 1]}"#),
            event(TaskEventKind::TaskFailed, None, r#"["a",1]"#)
        );
        assert_eq!(
            parse_line(r#"{"event": "stats", "ok": -1, "changed": 99999999999}"#),
            Some(CallbackLine::Stats(PlayStats { changed: u32::MAX, ..PlayStats::default() }))
        );
    }

    #[test]
    fn truncation() {
        assert_eq!(truncate_chars("abc", 3), "abc");
        assert_eq!(truncate_chars("abcd", 3), "ab…");
        assert_eq!(truncate_chars("", 0), "");
    }
}
