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
use super::lang::{self, Lang};
use super::text::{is_email_like, is_hostname_like, is_ip_like, joined, tokenize, Tok};
use super::vet::capabilities_in;
use super::{ApplianceFacts, Context, Role, Turn};
use hearth_protocol::catalog::Catalog;

/// What the rules make of the conversation's last turn, and the language to answer in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Understood {
    pub lang: Lang,
    pub what: Interpretation,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Interpretation {
    /// An answer, a refusal or a question back: no task.
    Reply(String),
    /// The catalog actions asked for, in order, for [`super::vet`] to judge one by one;
    /// `cannot`: the parts of the request that are no catalog action ("install netflix"),
    /// to be named in the reply, never dropped silently.
    Plan { steps: Vec<Step>, cannot: Vec<String> },
}

/// One catalog action of a plan with the parameters found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Step {
    pub action: &'static str,
    pub params: Map<String, Value>,
    pub appliance: Option<String>,
}

impl Step {
    /// The first required parameter not found yet.
    fn missing(&self) -> Option<String> {
        let a = Catalog::embedded().action(self.action)?;
        a.params
            .get("required")
            .and_then(Value::as_array)?
            .iter()
            .filter_map(Value::as_str)
            .find(|r| !self.params.contains_key(*r))
            .map(str::to_string)
    }
}

/// How many earlier customer turns a follow-up may reach back through ("add a user" …
/// "which name?" … "alice").
const MAX_FOLLOW_UP_DEPTH: usize = 3;

pub(crate) fn interpret(ctx: &Context, turns: &[Turn]) -> Understood {
    read(ctx, turns, 0)
}

fn reply(lang: Lang, text: String) -> Understood {
    Understood { lang, what: Interpretation::Reply(text) }
}

fn read(ctx: &Context, turns: &[Turn], depth: usize) -> Understood {
    let Some(text) = turns.last().map(|t| t.text.as_str()) else {
        return reply(Lang::En, not_understood(Lang::En));
    };
    if let Some(refusal) = guard(ctx, text) {
        return reply(Lang::En, refusal);
    }
    let raw = tokenize(text);
    if raw.is_empty() {
        return reply(Lang::En, not_understood(Lang::En));
    }
    let pending = if depth < MAX_FOLLOW_UP_DEPTH { pending(ctx, turns, depth) } else { None };
    let mut lang = lang::detect(&raw);
    // A short answer ("alice") is in the language of the question it answers.
    if lang == Lang::En && raw.len() <= 4 {
        if let Some((l, ..)) = &pending {
            lang = *l;
        }
    }
    let toks = lang::to_english(raw, lang);
    let words = joined(&toks);
    if let Some(answer) = wifi(&words, lang) {
        return reply(lang, answer);
    }
    let segments = split(&toks);
    let found: Vec<Option<&'static str>> = segments.iter().map(|s| detect(s, &joined(s))).collect();
    let any_action = found.iter().any(Option::is_some);
    match question(&toks, &words) {
        Question::Yes => return reply(lang, answer_question(ctx, &toks, &words, lang)),
        Question::IfNoAction if !any_action => return reply(lang, answer_question(ctx, &toks, &words, lang)),
        _ => {}
    }
    let appliance = mentioned_appliance(ctx, &toks, &words).map(|a| a.id.to_string());
    if any_action {
        let plan = plan(&segments, &found, appliance, lang);
        // A short follow-up that names the action again but still lacks what was asked
        // for ("cam.home" after "point a name to 192.168.1.33") completes the request.
        let incomplete = match &plan.what {
            Interpretation::Plan { steps, .. } => steps.len() == 1 && steps[0].missing().is_some(),
            Interpretation::Reply(_) => false,
        };
        if incomplete && toks.len() <= 8 {
            if let Some(filled) = pending.as_ref().and_then(|p| fill(p, &toks, &words)) {
                return filled;
            }
        }
        return plan;
    }
    if let Some(reply_text) = small_talk(&toks, &words, lang) {
        return reply(lang, reply_text);
    }
    // The missing detail of the previous request: "add a user" … "alice".
    if toks.len() <= 8 {
        if let Some(filled) = pending.as_ref().and_then(|p| fill(p, &toks, &words)) {
            return filled;
        }
    }
    if off_catalog(&words) {
        return reply(
            lang,
            format!("{} {}", lang.pick(NOT_POSSIBLE_EN, NOT_POSSIBLE_DE, NOT_POSSIBLE_ES), capabilities_in(lang)),
        );
    }
    // A statement of a problem ("my internet is slow") is a question too.
    if !facts::topics(&words).is_empty() || knowledge::best_match(toks.iter().map(|t| t.low.as_str())).is_some() {
        return reply(lang, answer_question(ctx, &toks, &words, lang));
    }
    reply(lang, not_understood(lang))
}

const NOT_POSSIBLE_EN: &str = "Sorry, that is not something I can do.";
const NOT_POSSIBLE_DE: &str = "Das kann ich leider nicht tun.";
const NOT_POSSIBLE_ES: &str = "Lo siento, eso no puedo hacerlo.";

/// The plan still waiting for a detail when the previous customer turn was read: its
/// language, its steps and cannots, the step and the parameter asked for.
type Pending = (Lang, Vec<Step>, Vec<String>, usize, String);

fn pending(ctx: &Context, turns: &[Turn], depth: usize) -> Option<Pending> {
    let last = turns.len().checked_sub(1)?;
    let prev = (0..last).rev().find(|&i| turns[i].role == Role::Customer)?;
    let earlier = read(ctx, &turns[..=prev], depth + 1);
    let Interpretation::Plan { steps, cannot } = earlier.what else { return None };
    let (index, param) = steps.iter().enumerate().find_map(|(i, s)| s.missing().map(|p| (i, p)))?;
    Some((earlier.lang, steps, cannot, index, param))
}

/// The pending plan with the detail asked for taken from this answer (and any other
/// parameter of that step the answer names).
fn fill(p: &Pending, toks: &[Tok], words: &str) -> Option<Understood> {
    let (lang, steps, cannot, index, param) = p;
    let step = &steps[*index];
    let schema = &Catalog::embedded().action(step.action)?.params;
    let value = extract::answer_for(schema, param, toks, words)?;
    let mut steps = steps.clone();
    let s = &mut steps[*index];
    for (k, v) in extract::params(schema, toks, words) {
        s.params.entry(k).or_insert(v);
    }
    s.params.insert(param.clone(), value);
    Some(Understood { lang: *lang, what: Interpretation::Plan { steps, cannot: cannot.clone() } })
}

/// Segments of a request as steps: each with an action becomes a step (or a refusal to
/// act, when it is declined); one without an action completes the step before it, names a
/// further step of the same action ("… and printer.home to 192.168.1.21"), or, led by a
/// verb, is something the catalog cannot do.
fn plan(segments: &[Vec<Tok>], found: &[Option<&'static str>], appliance: Option<String>, lang: Lang) -> Understood {
    let mut steps: Vec<Step> = Vec::new();
    let mut merged: Vec<Vec<Tok>> = Vec::new();
    let mut cannot = Vec::new();
    let mut declined = 0;
    for (seg, action) in segments.iter().zip(found) {
        let words = joined(seg);
        match action {
            Some(action) => {
                if declines(&words) {
                    declined += 1;
                    continue;
                }
                let mut s = step(action, seg, &words, appliance.clone());
                // "samba keeps crashing, restart it": "it" is what the step before named.
                if s.missing().is_some() && refers_back(seg) {
                    if let Some(prev) = merged.last() {
                        let mut toks = prev.clone();
                        toks.extend(seg.iter().cloned());
                        s = step(action, &toks, &joined(&toks), appliance.clone());
                    }
                }
                if steps.last() == Some(&s) {
                    continue;
                }
                merged.push(seg.clone());
                steps.push(s);
            }
            None => {
                let Some(prev) = steps.last_mut() else {
                    if verb_led(seg) {
                        cannot.push(segment_text(seg));
                    }
                    continue;
                };
                let schema = &Catalog::embedded().action(prev.action).map(|a| a.params.clone()).unwrap_or_default();
                let own = Step { action: prev.action, params: extract::params(schema, seg, &words), appliance: None };
                // Only a part with values of its own shape (host names, addresses) is a
                // further step; one that restates a name ("…, username should be x")
                // completes the step before, where an explicit value wins.
                let values =
                    seg.iter().any(|t| is_hostname_like(&t.raw) || is_ip_like(&t.raw) || is_email_like(&t.raw));
                if prev.missing().is_none() && own.missing().is_none() && !verb_led(seg) && values {
                    let action = prev.action;
                    merged.push(seg.clone());
                    steps.push(Step { action, params: own.params, appliance: appliance.clone() });
                } else if verb_led(seg) && prev.missing().is_none() && !refers_back(seg) {
                    cannot.push(segment_text(seg));
                } else {
                    // Context for the step before: "Please create a share. Call it Library."
                    let toks = merged.last_mut().expect("a step has its segment");
                    toks.extend(seg.iter().cloned());
                    let words = joined(toks);
                    *prev = step(prev.action, toks, &words, appliance.clone());
                }
            }
        }
    }
    if steps.is_empty() {
        let text = if declined > 0 {
            lang.pick(
                "All right, I won't do anything then.",
                "In Ordnung, dann mache ich nichts.",
                "De acuerdo, entonces no haré nada.",
            )
            .to_string()
        } else {
            not_understood(lang)
        };
        return Understood { lang, what: Interpretation::Reply(text) };
    }
    Understood { lang, what: Interpretation::Plan { steps, cannot } }
}

fn step(action: &'static str, toks: &[Tok], words: &str, appliance: Option<String>) -> Step {
    let schema = Catalog::embedded().action(action).map(|a| &a.params);
    let params = schema.map(|s| extract::params(s, toks, words)).unwrap_or_default();
    Step { action, params, appliance }
}

/// "don't restart anything", "we don't want a new user after all" — but not "we don't need
/// the Downloads share anymore", which asks for a removal.
fn declines(words: &str) -> bool {
    has(words, &["don't", "dont", "do not", "never", "no need to", "not now", "not want"]) && !no_longer_needed(words)
}

/// A thing said to be no longer needed: a removal.
fn no_longer_needed(words: &str) -> bool {
    has(
        words,
        &[
            "don't need",
            "do not need",
            "dont need",
            "no longer need",
            "no longer needed",
            "not needed",
            "isn't needed",
            "aren't needed",
            "don't use",
            "do not use",
            "no longer use",
            "can go",
            "not used",
            "isn't used",
            "no longer",
            "not need",
        ],
    )
}

/// A segment speaking of what the one before named: "… and put her in the family group".
fn refers_back(seg: &[Tok]) -> bool {
    seg.iter().any(|t| ["him", "her", "it", "them", "his", "their", "its", "there"].contains(&t.low.as_str()))
}

/// The words of a segment as the customer wrote them (for "I can't do …").
fn segment_text(seg: &[Tok]) -> String {
    let words: Vec<&str> = seg
        .iter()
        .map(|t| t.raw.as_str())
        .skip_while(|w| ["and", "then", "also", "please", "after", "that"].contains(&w.to_lowercase().as_str()))
        .collect();
    super::text::shorten(&words.join(" "), 80)
}

/// Verbs that start a step of a request, known to the catalog or not.
#[rustfmt::skip]
const VERBS: &[&str] = &[
    "add", "create", "make", "set", "setup", "give", "register", "open", "generate", "get", "remove", "delete", "drop",
    "erase", "destroy", "deactivate", "revoke", "kill", "nuke", "terminate", "close", "purge", "eliminate", "reset",
    "change", "restart", "reboot", "reload", "bounce", "kick", "point", "map", "issue", "forward", "redirect",
    "send", "route", "install", "uninstall", "order", "buy", "download", "upload", "upgrade", "update", "play",
    "book", "call", "show", "tell", "fix", "clean", "turn", "put", "enable", "disable", "block", "unblock", "rename",
    "move", "copy", "stop", "start", "switch", "run", "check", "email", "print", "backup", "schedule", "power",
];

/// Words a step may start with before its verb.
const LEAD: &[&str] =
    &["please", "also", "then", "you", "could", "can", "would", "i", "we", "want", "to", "need", "like", "and", "pls"];

fn verb_led(seg: &[Tok]) -> bool {
    seg.iter().find(|t| !LEAD.contains(&t.low.as_str())).is_some_and(|t| VERBS.contains(&t.low.as_str()))
}

/// A request cut into its steps, in the order they are to be done: at the end of a
/// sentence, and at "and", "then", "also", "after that", a comma… when a verb follows
/// ("add user nina and then create share nina-docs"), or a host name and an address of
/// a second DNS name; "X after you Y" is Y, then X.
fn split(toks: &[Tok]) -> Vec<Vec<Tok>> {
    // (first token of the segment, tokens of the joining words to drop, reversed)
    let mut cuts: Vec<(usize, usize, bool)> = Vec::new();
    let hosts_before = |i: usize| toks[..i].iter().any(|t| is_hostname_like(&t.raw));
    let ips_before = |i: usize| toks[..i].iter().any(|t| is_ip_like(&t.raw));
    let mut i = 1;
    while i < toks.len() {
        let prev = &toks[i - 1];
        let low = toks[i].low.as_str();
        let next = toks.get(i + 1).map(|t| t.low.as_str()).unwrap_or("");
        let sentence_end = matches!(prev.trail, Some('.' | '!' | '?' | ';'));
        let comma = prev.trail == Some(',');
        // How many joining words start here, and whether they reverse the order.
        let (join, reversed) = match (low, next) {
            ("and", "then" | "also" | "afterwards" | "after") => (if next == "after" { 3 } else { 2 }, false),
            ("after", "that" | "this") | ("and", "finally") => (2, false),
            ("after", "you" | "you've" | "having") | ("once", "you" | "you've") => (2, true),
            ("then" | "afterwards" | "plus" | "and" | "finally", _) => (1, false),
            ("also", _) if comma || sentence_end => (1, false),
            _ => (0, false),
        };
        let rest = &toks[(i + join).min(toks.len())..];
        let verb = verb_led(rest);
        let ellipsis = join > 0
            && low == "and"
            && rest.first().is_some_and(|t| is_hostname_like(&t.raw))
            && rest.iter().any(|t| is_ip_like(&t.raw))
            && hosts_before(i)
            && ips_before(i);
        if sentence_end || ((join > 0 || comma) && (verb || ellipsis)) {
            cuts.push((i, if verb || ellipsis { join } else { 0 }, reversed && verb));
            i += join.max(1);
            continue;
        }
        i += 1;
    }
    let mut segments: Vec<Vec<Tok>> = Vec::new();
    let mut start = 0;
    let mut reverse_next = false;
    let mut reversed_pairs: Vec<usize> = Vec::new();
    for (at, join, reversed) in cuts.iter().copied().chain(std::iter::once((toks.len(), 0, false))) {
        if at > start {
            segments.push(toks[start..at].to_vec());
            if reverse_next {
                reversed_pairs.push(segments.len() - 1);
            }
        }
        reverse_next = reversed;
        start = (at + join).min(toks.len());
    }
    for i in reversed_pairs {
        if i > 0 {
            segments.swap(i - 1, i);
        }
    }
    segments.retain(|s| !s.is_empty());
    segments
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
    "take away", "take down", "close", "del", "eliminate", "purge", "unshare", "stop sharing", "no longer", "kill",
    "nuke", "terminate", "retire",
];
#[rustfmt::skip]
const RESET: &[&str] = &[
    "reset", "forgot", "forgotten", "forget", "lost", "recover", "unlock", "locked out", "new password", "change",
    "can't log in", "cannot log in", "can't sign in", "cannot sign in", "doesn't remember",
];
#[rustfmt::skip]
const RESTART: &[&str] = &[
    "restart", "restarts", "restarting", "reboot", "reboots", "rebooting", "reload", "bounce", "kick", "power cycle",
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
const PASSWORD: &[&str] = &["password", "passwords", "passwd", "pw", "pwd", "passcode", "pass word"];
#[rustfmt::skip]
const SHARE: &[&str] = &[
    "share", "shares", "shared folder", "shared folders", "folder", "folders", "directory", "network drive",
    "network folder", "file share", "smb share", "samba share", "drive", "drives", "shared drive", "network share",
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
    "send", "sends", "route", "routes", "goes to", "go to", "go", "goes", "land", "lands", "end up", "arrive",
];
const CERT: &[&str] = &["certificate", "certificates", "cert", "certs", "tls", "ssl", "https", "x509"];

/// The catalog action a request is for, from the objects and verbs it names.
fn detect(toks: &[Tok], words: &str) -> Option<&'static str> {
    let hosts = toks.iter().any(|t| is_hostname_like(&t.raw));
    let ips = toks.iter().any(|t| is_ip_like(&t.raw));
    let emails = toks.iter().any(|t| is_email_like(&t.raw));
    let remove = has(words, REMOVE) || no_longer_needed(words);
    let add = has(words, ADD);
    // A service the catalog can restart (its `enum`), named by its name or a synonym.
    let service = Catalog::embedded()
        .action("service.restart")
        .and_then(|a| a.params.pointer("/properties/service/enum"))
        .and_then(Value::as_array)
        .is_some_and(|values| extract::enum_value(words, values).is_some());
    let user = has(words, USER);
    let share = has(words, SHARE);
    // `support@`: an alias of this appliance's mail.
    let mail = has(words, MAIL) || toks.iter().any(|t| extract::is_alias_address(&t.raw));
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
    // "account for grandpa please, login name: opa": an explicit name asks for the account.
    if user && (add || extract::explicit_username(toks).is_some()) {
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

fn answer_question(ctx: &Context, toks: &[Tok], words: &str, lang: Lang) -> String {
    if has(words, &["what can you do", "what do you do", "help", "help me", "what are you"]) && toks.len() <= 6 {
        let tail = lang.pick(
            "Just tell me what you need, or ask me a question.",
            "Sagen Sie mir einfach, was Sie brauchen, oder stellen Sie mir eine Frage.",
            "Dígame lo que necesita o hágame una pregunta.",
        );
        return format!("{} {tail}", capabilities_in(lang));
    }
    let topics = facts::topics(words);
    if !topics.is_empty() {
        return facts::answer(ctx, &topics, mentioned_appliance(ctx, toks, words), lang);
    }
    if let Some(article) = knowledge::best_match(toks.iter().map(|t| t.low.as_str())) {
        let note = lang.pick(
            "",
            "(Dieser Artikel ist nur auf Englisch verfügbar.)\n\n",
            "(Este artículo solo está disponible en inglés.)\n\n",
        );
        return format!("{note}**{}**\n\n{}", article.title, article.body);
    }
    let tail = lang.pick(
        "I can also explain how to open your shares from Windows or a Mac, how to set up mail on your phone, or what \
         to do when the internet is slow, and tell you whether your appliance is online.",
        "Ich kann auch erklären, wie Sie Ihre Freigaben unter Windows oder auf dem Mac öffnen, wie Sie Mail auf dem \
         Telefon einrichten und was bei langsamem Internet hilft, und Ihnen sagen, ob Ihr Gerät online ist.",
        "También puedo explicarle cómo abrir sus carpetas compartidas desde Windows o un Mac, cómo configurar el \
         correo en el móvil o qué hacer si internet va lento, y decirle si su equipo está en línea.",
    );
    let head = lang.pick("I'm not sure about that one.", "Da bin ich mir nicht sicher.", "No estoy seguro de eso.");
    format!("{head} {}\n\n{tail}", capabilities_in(lang))
}

/// Wi-Fi is the router's, not the appliance's: say so rather than answer with an article
/// about something else.
fn wifi(words: &str, lang: Lang) -> Option<String> {
    let wifi = has(words, &["wifi", "wi-fi", "wlan", "wireless", "ssid", "hotspot", "router password", "network key"]);
    let about = has(
        words,
        &[
            "password",
            "passwords",
            "pwd",
            "passwort",
            "contraseña",
            "clave",
            "connect",
            "join",
            "network name",
            "key",
            "code",
            "ssid",
            "name",
            "change",
            "reset",
            "forgot",
        ],
    );
    if !(wifi && about) {
        return None;
    }
    Some(
        lang.pick(
            "Your Wi-Fi is run by your router, not by your Hearth appliance, so I can't see or change its name or \
             password. The Wi-Fi name and password are usually printed on a sticker on the router; to change them, \
             sign in to the router's own settings page or ask your internet provider. Once a device is on your Wi-Fi, \
             I can help it reach the appliance's shares and mail.",
            "Ihr WLAN wird von Ihrem Router betrieben, nicht von Ihrem Hearth-Gerät; ich kann seinen Namen und sein \
             Passwort weder sehen noch ändern. WLAN-Name und Passwort stehen meist auf einem Aufkleber am Router; \
             ändern können Sie sie in den Einstellungen des Routers oder über Ihren Internetanbieter.",
            "Su wifi lo gestiona su router, no su equipo Hearth, así que no puedo ver ni cambiar su nombre ni su \
             contraseña. Suelen estar impresos en una etiqueta del router; para cambiarlos, entre en la página de \
             configuración del router o consulte a su proveedor de internet.",
        )
        .to_string(),
    )
}

fn small_talk(toks: &[Tok], words: &str, lang: Lang) -> Option<String> {
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
        return Some(
            lang.pick(
                "You're welcome! Is there anything else I can help with?",
                "Gern geschehen! Kann ich sonst noch helfen?",
                "¡De nada! ¿Puedo ayudarle en algo más?",
            )
            .into(),
        );
    }
    if has(words, &["bye", "goodbye", "see you", "good night"]) {
        return Some(
            lang.pick(
                "Goodbye! I'm here whenever you need me.",
                "Auf Wiedersehen! Ich bin da, wann immer Sie mich brauchen.",
                "¡Adiós! Aquí estoy cuando me necesite.",
            )
            .into(),
        );
    }
    if has(words, &["hi", "hello", "hey", "good morning", "good evening", "good afternoon"]) {
        return Some(
            lang.pick(
                "Hello! I can manage your appliance's users, shares, DNS names, mail aliases, certificates and \
                 services, and answer questions about it. What can I do for you?",
                "Hallo! Ich verwalte Benutzer, Freigaben, DNS-Namen, Mail-Aliasse, Zertifikate und Dienste Ihres \
                 Geräts und beantworte Fragen dazu. Was kann ich für Sie tun?",
                "¡Hola! Puedo gestionar los usuarios, carpetas compartidas, nombres DNS, alias de correo, \
                 certificados y servicios de su equipo, y responder preguntas. ¿Qué puedo hacer por usted?",
            )
            .into(),
        );
    }
    if has(
        words,
        &["yes", "yeah", "yep", "sure", "ok", "okay", "confirm", "confirmed", "go ahead", "do it", "please do"],
    ) {
        return Some(
            lang.pick(
                "To go ahead, confirm the proposal I made; I never start a change from a chat message alone.",
                "Bestätigen Sie dazu bitte meinen Vorschlag; ich starte keine Änderung allein aufgrund einer \
                 Chat-Nachricht.",
                "Para continuar, confirme mi propuesta; nunca inicio un cambio solo por un mensaje del chat.",
            )
            .into(),
        );
    }
    if has(words, &["no", "nope", "cancel", "never mind", "nevermind", "stop"]) {
        return Some(
            lang.pick("All right, I won't do anything.", "In Ordnung, ich mache nichts.", "De acuerdo, no haré nada.")
                .into(),
        );
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

fn not_understood(lang: Lang) -> String {
    let (head, examples) = match lang {
        Lang::En => (
            "I'm not sure what you would like me to do.",
            "For example: “add a user called alice”, “make printer.home point to 192.168.1.50” or “restart the file \
             sharing service”. You can also ask me questions, such as “how do I open my files from Windows?”.",
        ),
        Lang::De => (
            "Ich bin nicht sicher, was ich tun soll.",
            "Zum Beispiel: „Lege den Benutzer alice an“, „nas.home soll auf 192.168.1.50 zeigen“ oder „Starte den \
             Mailserver neu“.",
        ),
        Lang::Es => (
            "No estoy seguro de qué quiere que haga.",
            "Por ejemplo: «crea un usuario llamado alice», «haz que nas.home apunte a 192.168.1.50» o «reinicia el \
             servidor de correo».",
        ),
    };
    format!("{head} {}\n\n{examples}", capabilities_in(lang))
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
