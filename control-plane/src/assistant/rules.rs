//! The deterministic backend: no model, no network, microseconds per message. It is the
//! default when no Ollama is configured and the fallback when Ollama fails.
//!
//! A message is, in this order: refused by [`super::guard`]; a question (answered from the
//! appliances' facts or the knowledge base, never with a task); a request for a catalog
//! action (recognised by the objects and verbs it names, its parameters filled by
//! [`super::extract`] from the action's schema); small talk; the missing detail of the
//! previous request ("add a user" … "alice"); or something it cannot do, answered with
//! what it can do.

use serde_json::{Map, Value};

use super::extract::{self, is_filler};
use super::facts;
use super::guard::guard;
use super::knowledge;
use super::text::{is_email_like, is_hostname_like, is_ip_like, joined, tokenize, Tok};
use super::vet::capabilities;
use super::{ApplianceFacts, Context, Role, Turn};
use hearth_protocol::catalog::Catalog;

/// What the rules make of the conversation's last turn.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Interpretation {
    /// An answer, a refusal or a question back: no task.
    Reply(String),
    /// A catalog action with the parameters found, for [`super::vet`] to judge.
    Task { action: String, params: Map<String, Value>, appliance: Option<String> },
}

pub(crate) fn interpret(ctx: &Context, turns: &[Turn]) -> Interpretation {
    let Some(text) = turns.last().map(|t| t.text.as_str()) else {
        return Interpretation::Reply(not_understood());
    };
    if let Some(refusal) = guard(ctx, text) {
        return Interpretation::Reply(refusal);
    }
    let toks = tokenize(text);
    if toks.is_empty() {
        return Interpretation::Reply(not_understood());
    }
    let words = joined(&toks);
    let action = detect(&toks, &words);
    match question(&toks, &words) {
        Question::Yes => return Interpretation::Reply(answer_question(ctx, &toks, &words)),
        Question::IfNoAction if action.is_none() => return Interpretation::Reply(answer_question(ctx, &toks, &words)),
        _ => {}
    }
    if let Some(action) = action {
        return task(ctx, action, &toks, &words);
    }
    if let Some(reply) = small_talk(&toks, &words) {
        return Interpretation::Reply(reply);
    }
    // The missing detail of the previous request: "add a user" … "alice".
    if toks.len() <= 6 {
        let previous = turns.iter().rev().skip(1).find(|t| t.role == Role::Customer);
        if let Some(prev) = previous.filter(|p| guard(ctx, &p.text).is_none()) {
            let prev_toks = tokenize(&prev.text);
            if let Some(action) = detect(&prev_toks, &joined(&prev_toks)) {
                let merged = tokenize(&format!("{} {text}", prev.text));
                return task(ctx, action, &merged, &joined(&merged));
            }
        }
    }
    if off_catalog(&words) {
        return Interpretation::Reply(format!("Sorry, that is not something I can do. {}", capabilities()));
    }
    // A statement of a problem ("my internet is slow") is a question too.
    if !facts::topics(&words).is_empty() || knowledge::best_match(toks.iter().map(|t| t.low.as_str())).is_some() {
        return Interpretation::Reply(answer_question(ctx, &toks, &words));
    }
    Interpretation::Reply(not_understood())
}

fn task(ctx: &Context, action: &'static str, toks: &[Tok], words: &str) -> Interpretation {
    if has(words, &["don't", "dont", "do not", "never", "no need to", "not now"]) {
        return Interpretation::Reply("All right, I won't do anything then.".into());
    }
    let Some(a) = Catalog::embedded().action(action) else {
        return Interpretation::Reply(not_understood());
    };
    Interpretation::Task {
        action: a.id.clone(),
        params: extract::params(&a.params, toks, words),
        appliance: mentioned_appliance(ctx, toks, words).map(|a| a.id.to_string()),
    }
}

/// Whole-word (or whole-phrase) match in `words` (see [`joined`]).
fn has(words: &str, list: &[&str]) -> bool {
    list.iter().any(|w| words.contains(&format!(" {w} ")))
}

#[rustfmt::skip]
const ADD: &[&str] = &[
    "add", "adds", "adding", "create", "creating", "make", "new", "set up", "setup", "give", "register", "open",
    "need", "needs", "want", "like", "generate", "get", "another",
];
#[rustfmt::skip]
const REMOVE: &[&str] = &[
    "remove", "removing", "delete", "deleting", "drop", "erase", "destroy", "deactivate", "revoke", "get rid of",
    "take away", "take down", "close", "del", "eliminate", "purge", "unshare", "stop sharing", "no longer",
];
#[rustfmt::skip]
const RESET: &[&str] = &[
    "reset", "forgot", "forgotten", "forget", "lost", "recover", "unlock", "locked out", "new password", "change",
    "can't log in", "cannot log in", "can't sign in", "cannot sign in", "doesn't remember",
];
#[rustfmt::skip]
const RESTART: &[&str] = &[
    "restart", "restarts", "restarting", "reboot", "reboots", "rebooting", "reload", "bounce", "power cycle",
    "turn it off and on", "turn off and on",
];
/// A service in trouble: offer to restart it when one is named.
#[rustfmt::skip]
const SYMPTOMS: &[&str] = &[
    "stuck", "hung", "hangs", "hanging", "frozen", "freezes", "unresponsive", "not responding", "crashed",
    "crashing", "keeps crashing", "not working", "stopped working", "isn't working", "is down", "broken",
];
const REBOOT: &[&str] = &["reboot", "reboots", "rebooting", "power cycle", "turn it off and on", "turn off and on"];
const DEVICE: &[&str] =
    &["appliance", "box", "device", "server", "machine", "system", "hearth", "whole thing", "everything", "unit"];
#[rustfmt::skip]
const USER: &[&str] = &[
    "user", "users", "account", "accounts", "login", "logins", "username", "usernames", "person", "member",
    "profile",
];
const PASSWORD: &[&str] = &["password", "passwords", "passwd", "pw", "passcode", "pass word"];
#[rustfmt::skip]
const SHARE: &[&str] = &[
    "share", "shares", "shared folder", "shared folders", "folder", "folders", "directory", "network drive",
    "network folder", "file share", "smb share", "samba share",
];
#[rustfmt::skip]
const DNS: &[&str] = &[
    "dns", "record", "records", "entry", "entries", "hostname", "host name", "a record", "dns name", "local name",
    "domain name",
];
const RESOLVE: &[&str] = &["resolve", "resolves", "resolving", "point", "points", "pointing", "map", "maps", "mapping"];
#[rustfmt::skip]
const FORWARDER: &[&str] = &[
    "forwarder", "forwarders", "upstream", "resolver", "resolvers", "dns server", "dns servers", "dns provider",
    "nameserver", "nameservers", "name server", "name servers", "forward dns", "forward all dns", "dns forwarding",
    "forward queries", "as dns", "as my dns", "as the dns", "for dns",
];
const ALIAS: &[&str] =
    &["alias", "aliases", "forwarding address", "mail forward", "mail forwarding", "email forwarding"];
const MAIL: &[&str] = &["mail", "email", "e-mail", "emails", "mails", "mailbox", "postmaster"];
#[rustfmt::skip]
const FORWARD: &[&str] = &[
    "forward", "forwards", "forwarded", "forwarding", "redirect", "redirects", "deliver", "delivers", "delivered",
    "send", "sends", "route", "routes", "goes to", "go to",
];
const CERT: &[&str] = &["certificate", "certificates", "cert", "certs", "tls", "ssl", "https", "x509"];

/// The catalog action a request is for, from the objects and verbs it names.
fn detect(toks: &[Tok], words: &str) -> Option<&'static str> {
    let hosts = toks.iter().any(|t| is_hostname_like(&t.raw));
    let ips = toks.iter().any(|t| is_ip_like(&t.raw));
    let emails = toks.iter().any(|t| is_email_like(&t.raw));
    let remove = has(words, REMOVE);
    let add = has(words, ADD);
    // A service the catalog can restart (its `enum`), named by its name or a synonym.
    let service = Catalog::embedded()
        .action("service.restart")
        .and_then(|a| a.params.pointer("/properties/service/enum"))
        .and_then(Value::as_array)
        .is_some_and(|values| extract::enum_value(words, values).is_some());
    let user = has(words, USER);
    let share = has(words, SHARE);
    let mail = has(words, MAIL);
    let alias = has(words, ALIAS);

    if has(words, CERT) {
        return (!remove).then_some("pki.cert.issue");
    }
    if has(words, PASSWORD) && (has(words, RESET) || !(user && add)) {
        return Some("users.reset_password");
    }
    if has(words, &["locked out", "can't log in", "cannot log in", "can't sign in", "cannot sign in"]) {
        return Some("users.reset_password");
    }
    if has(words, RESTART) {
        if service {
            return Some("service.restart");
        }
        if has(words, REBOOT) || has(words, DEVICE) {
            return Some("appliance.reboot");
        }
        return Some("service.restart");
    }
    if has(words, SYMPTOMS) && service {
        return Some("service.restart");
    }
    if has(words, FORWARDER) || (has(words, &["dns"]) && ips && !hosts) {
        return (!remove).then_some("dns.forwarders.set");
    }
    if alias {
        return Some(if remove { "mail.alias.remove" } else { "mail.alias.add" });
    }
    if has(words, DNS) || (hosts && (has(words, RESOLVE) || ips)) || (hosts && !(user || share || mail)) {
        if remove {
            return Some("dns.record.remove");
        }
        if ips || add || has(words, RESOLVE) || hosts {
            return Some("dns.record.add");
        }
    }
    // Not every ADD word: "my phone can't get mail" is a question about a phone.
    let mail_add = has(words, &["add", "create", "make", "new"]);
    if (mail && (has(words, FORWARD) || mail_add || emails)) || (has(words, FORWARD) && emails) {
        return Some("mail.alias.add");
    }
    if mail && remove {
        return Some("mail.alias.remove");
    }
    if share {
        return Some(if remove { "shares.remove" } else { "shares.add" });
    }
    if user && remove {
        return Some("users.remove");
    }
    if user && add {
        return Some("users.add");
    }
    // "remove john from the system": a person taken off the appliance.
    if remove
        && has(words, &["from the system", "from the appliance", "from the box", "from the server", "from hearth"])
    {
        return Some("users.remove");
    }
    None
}

enum Question {
    Yes,
    /// "can I …": a question unless it names an action.
    IfNoAction,
    No,
}

const GREETINGS: &[&str] =
    &["hi", "hello", "hey", "please", "ok", "okay", "so", "well", "um", "also", "and", "thanks", "dear"];
#[rustfmt::skip]
const ASKING: &[&str] = &[
    "how", "how's", "hows", "why", "why's", "what", "what's", "whats", "where", "where's", "when", "who", "which",
    "whose", "is", "are", "does", "do", "did", "was", "were", "should", "isn't", "aren't", "doesn't", "has", "have",
    "hasn't",
];

fn question(toks: &[Tok], words: &str) -> Question {
    let first = toks.iter().position(|t| !GREETINGS.contains(&t.low.as_str()));
    let Some(first) = first else { return Question::No };
    let w = toks[first].low.as_str();
    let next = toks.get(first + 1).map(|t| t.low.as_str()).unwrap_or("");
    if has(
        words,
        &[
            "is it possible to",
            "would it be possible to",
            "do you mind",
            "can you",
            "could you",
            "would you",
            "will you",
        ],
    ) {
        return Question::IfNoAction;
    }
    if ASKING.contains(&w)
        || has(words, &["how to", "how do", "how can", "tell me how", "explain", "i have a question"])
    {
        return Question::Yes;
    }
    if ["can", "could", "may"].contains(&w) && ["i", "we"].contains(&next) {
        return Question::IfNoAction;
    }
    if toks.last().is_some_and(|t| t.trail == Some('?')) {
        return Question::IfNoAction;
    }
    Question::No
}

fn answer_question(ctx: &Context, toks: &[Tok], words: &str) -> String {
    if has(words, &["what can you do", "what do you do", "help", "help me", "what are you"]) && toks.len() <= 6 {
        return format!("{} Just tell me what you need, or ask me a question.", capabilities());
    }
    let topics = facts::topics(words);
    if !topics.is_empty() {
        return facts::answer(ctx, &topics, mentioned_appliance(ctx, toks, words));
    }
    if let Some(article) = knowledge::best_match(toks.iter().map(|t| t.low.as_str())) {
        return format!("**{}**\n\n{}", article.title, article.body);
    }
    format!(
        "I'm not sure about that one. {}\n\nI can also explain how to open your shares from Windows or a Mac, how to \
         set up mail on your phone, or what to do when the internet is slow, and tell you whether your appliance \
         is online.",
        capabilities()
    )
}

fn small_talk(toks: &[Tok], words: &str) -> Option<String> {
    if toks.len() > 8 {
        return None;
    }
    if has(
        words,
        &[
            "thanks",
            "thank",
            "thx",
            "ty",
            "cheers",
            "great",
            "perfect",
            "awesome",
            "cool",
            "nice",
            "wonderful",
            "excellent",
            "brilliant",
            "worked",
        ],
    ) {
        return Some("You're welcome! Is there anything else I can help with?".into());
    }
    if has(words, &["bye", "goodbye", "see you", "good night"]) {
        return Some("Goodbye! I'm here whenever you need me.".into());
    }
    if has(words, &["hi", "hello", "hey", "good morning", "good evening", "good afternoon"]) {
        return Some(
            "Hello! I can manage your appliance's users, shares, DNS names, mail aliases, certificates and services, \
             and answer questions about it. What can I do for you?"
                .into(),
        );
    }
    if has(
        words,
        &["yes", "yeah", "yep", "sure", "ok", "okay", "confirm", "confirmed", "go ahead", "do it", "please do"],
    ) {
        return Some(
            "To go ahead, confirm the proposal I made; I never start a change from a chat message alone.".into(),
        );
    }
    if has(words, &["no", "nope", "cancel", "never mind", "nevermind", "stop"]) {
        return Some("All right, I won't do anything.".into());
    }
    None
}

/// Words of requests the catalog has no action for.
fn off_catalog(words: &str) -> bool {
    has(
        words,
        &[
            "install",
            "uninstall",
            "download",
            "upload",
            "upgrade",
            "mine",
            "miner",
            "mining",
            "bitcoin",
            "crypto",
            "hack",
            "backdoor",
            "malware",
            "virus",
            "spy",
            "wipe",
            "format",
            "shutdown",
            "shut down",
            "turn off",
            "power off",
            "factory reset",
            "firewall",
            "open port",
            "port forwarding",
            "vpn",
            "ssh",
            "telnet",
            "root",
            "administrator",
            "privileges",
            "permissions",
            "run",
            "delete everything",
            "delete all",
            "admin",
            "rights",
            "sudo",
            "superuser",
        ],
    )
}

fn not_understood() -> String {
    format!(
        "I'm not sure what you would like me to do. {}\n\nFor example: “add a user called alice”, “make printer.home \
         point to 192.168.1.50” or “restart the file sharing service”. You can also ask me questions, such as “how do \
         I open my files from Windows?”.",
        capabilities()
    )
}

/// The appliance a message names, by name or id, among several.
fn mentioned_appliance<'a>(ctx: &'a Context, toks: &[Tok], words: &str) -> Option<&'a ApplianceFacts> {
    if ctx.appliances.len() < 2 {
        return None;
    }
    ctx.appliances.iter().find(|a| {
        let name = a.name.to_lowercase();
        let id = a.id.to_string();
        (!name.is_empty() && !is_filler(&name) && words.contains(&format!(" {name} ")))
            || toks.iter().any(|t| t.low == id)
    })
}

#[cfg(test)]
mod tests;
