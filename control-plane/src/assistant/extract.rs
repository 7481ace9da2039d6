//! Parameter values from a message, chosen by each catalog parameter's schema: its
//! `format` (`hearth-username`, `hearth-share-name`, `hearth-local-hostname`, `hearth-host-ip`, …), its
//! type (lists, booleans) and its `enum`. A new catalog action made of known formats gets
//! its parameters filled without new code.
//!
//! Values are taken as written (user and group names in lower case): judging them is the
//! catalog validator's job, so `../../etc` is extracted as a share name and then refused
//! with the validator's reason.

use serde_json::{Map, Value};

use super::text::{is_email_like, is_hostname_like, is_ip_like, possessive, Tok};

/// Words that are never a value (articles, pronouns, prepositions, the objects and verbs
/// of requests).
#[rustfmt::skip]
const FILLER: &[&str] = &[
    "a", "an", "the", "new", "called", "named", "name", "for", "of", "with", "to", "into", "is", "as", "please",
    "my", "our", "their", "his", "her", "him", "them", "it", "its", "this", "that", "these", "me", "us", "and",
    "or", "on", "in", "from", "by", "at", "-", "->", "also", "too", "again", "now", "here", "there", "so", "who",
    "which", "can", "you", "could", "would", "will", "i", "we", "he", "she", "they", "be", "some", "one",
    "someone", "somebody", "just", "only", "all", "everyone", "everybody", "anyone", "anybody", "user", "users",
    "account", "accounts", "login", "username", "person", "member", "profile", "share", "shares", "folder",
    "folders", "directory", "alias", "aliases", "mail", "email", "e-mail", "group", "groups", "password",
    "passwords", "record", "entry", "dns", "certificate", "cert", "address", "add", "create", "make", "remove",
    "delete", "reset", "set", "need", "want", "give", "put", "get", "drop", "erase", "restart", "reboot",
    "forward", "forwards", "send", "sends", "deliver", "delivers", "redirect", "that", "what", "where", "should",
    "up", "read-only", "readonly", "read", "write", "access", "full", "real", "display", "writable", "writeable",
    "read-write", "rw", "belonging", "belongs", "owned", "then", "after", "anymore", "any", "more", "longer",
    "no", "not", "don't", "dont", "kill", "nuke", "terminate", "drive", "drives", "it's", "please", "thanks",
    "isn't", "aren't", "wasn't", "nobody", "can't", "won't", "doesn't",
];

pub(crate) fn is_filler(low: &str) -> bool {
    FILLER.contains(&low)
}

/// Words that may appear between an anchor ("user", "called", …) and its value.
#[rustfmt::skip]
const SKIP: &[&str] = &[
    "called", "named", "name", "is", "for", "of", "the", "a", "an", "new", "-", ":", "with", "username", "user",
    "account", "login", "id", "my", "our", "son", "daughter", "wife", "husband", "partner", "kid", "child", "mom",
    "mum", "dad", "mother", "father", "brother", "sister", "friend", "guest", "grandma", "grandpa", "roommate",
    "flatmate", "colleague", "nanny", "tenant", "lodger",
];

/// The parameters of `schema` (an action's `params` schema) found in `toks`.
pub(crate) fn params(schema: &Value, toks: &[Tok], words: &str) -> Map<String, Value> {
    let mut out = Map::new();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else { return out };
    let hosts: Vec<String> = toks.iter().filter(|t| is_hostname_like(&t.raw)).map(|t| t.raw.clone()).collect();
    let ips: Vec<String> = toks.iter().filter(|t| is_ip_like(&t.raw)).map(|t| t.raw.clone()).collect();
    let share_name = props.values().any(|p| format(p) == Some("hearth-share-name")).then(|| share_name(toks)).flatten();
    for (name, p) in props {
        let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
        let item_format = p.get("items").and_then(format);
        let value = match (ty, format(p), item_format) {
            ("string", Some("hearth-username"), _) => username(toks).map(Value::from),
            ("string", Some("hearth-full-name"), _) => full_name(toks).map(Value::from),
            ("string", Some("hearth-share-name"), _) => share_name.clone().map(Value::from),
            ("string", Some("hearth-local-hostname"), _) => hosts.first().cloned().map(Value::from),
            ("string", Some("ip" | "hearth-host-ip"), _) => ips.first().cloned().map(Value::from),
            ("string", Some("hearth-mail-alias"), _) => alias(toks).map(Value::from),
            ("string", Some("hearth-mail-destination"), _) => destination(toks).map(Value::from),
            // A value the enum does not have ("the ssh service") goes to the validator, which
            // names the allowed ones.
            ("string", _, _) => p.get("enum").and_then(Value::as_array).and_then(|e| {
                enum_value(words, e)
                    .or_else(|| before(toks, &[name.as_str()], &[]).map(|t| t.low.clone()))
                    .map(Value::from)
            }),
            ("array", _, Some("hearth-group")) => non_empty(groups(toks)),
            ("array", _, Some("hearth-username")) => {
                let mut users = user_list(toks);
                users.retain(|u| share_name.as_deref().is_none_or(|s| !s.eq_ignore_ascii_case(u)));
                non_empty(users)
            }
            ("array", _, Some("hearth-local-hostname")) => non_empty(hosts.iter().skip(1).cloned().collect()),
            ("array", _, Some("ip" | "hearth-host-ip")) => non_empty(ips.clone()),
            ("boolean", _, _) => flag(words, name).map(Value::from),
            _ => None,
        };
        if let Some(v) = value {
            out.insert(name.clone(), v);
        }
    }
    out
}

/// The answer to a question for parameter `name` of `schema`: what [`params`] finds in it,
/// else its first word that is not a filler, taken as the value ("alice", "Recipes").
pub(crate) fn answer_for(schema: &Value, name: &str, toks: &[Tok], words: &str) -> Option<Value> {
    if let Some(v) = params(schema, toks, words).remove(name) {
        return Some(v);
    }
    let p = schema.pointer(&format!("/properties/{name}"))?;
    let t = toks.iter().find(|t| !is_filler(&t.low) && !PRONOUNS.contains(&t.low.as_str()))?;
    let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
    match (ty, format(p)) {
        ("string", Some("hearth-username" | "hearth-mail-alias" | "hearth-mail-destination")) => {
            Some(Value::from(if is_email_like(&t.raw) { t.raw.clone() } else { local_part(&t.low) }))
        }
        ("string", Some("hearth-share-name" | "hearth-full-name")) => Some(Value::from(t.raw.clone())),
        ("array", _) if p.pointer("/items/format").and_then(Value::as_str) == Some("hearth-username") => {
            Some(Value::from(vec![t.low.clone()]))
        }
        _ => None,
    }
}

fn format(schema: &Value) -> Option<&str> {
    schema.get("format").and_then(Value::as_str)
}

fn non_empty(list: Vec<String>) -> Option<Value> {
    (!list.is_empty()).then(|| Value::from(list))
}

/// The first token after one of `anchors`, skipping `skip` words, that is not a filler.
/// Does not cross the end of a sentence.
fn after<'a>(toks: &'a [Tok], anchors: &[&str], skip: &[&str]) -> Option<&'a Tok> {
    for (i, t) in toks.iter().enumerate() {
        if !anchors.contains(&t.low.as_str()) || matches!(t.trail, Some('.' | '!' | '?' | ',' | ';')) {
            continue;
        }
        let mut j = i + 1;
        while j < toks.len() && skip.contains(&toks[j].low.as_str()) && !matches!(toks[j].trail, Some('.' | '!' | '?'))
        {
            j += 1;
        }
        if let Some(v) = toks.get(j).filter(|v| !is_filler(&v.low) && v.low != "->") {
            return Some(v);
        }
    }
    None
}

/// The token before `anchor`, skipping `skip` words, if it is not a filler.
fn before<'a>(toks: &'a [Tok], anchors: &[&str], skip: &[&str]) -> Option<&'a Tok> {
    for (i, t) in toks.iter().enumerate() {
        if !anchors.contains(&t.low.as_str()) {
            continue;
        }
        let mut j = i;
        while j > 0 && skip.contains(&toks[j - 1].low.as_str()) {
            j -= 1;
        }
        if j > 0 && toks[j - 1].trail.is_none() && !is_filler(&toks[j - 1].low) {
            return Some(&toks[j - 1]);
        }
    }
    None
}

const PRONOUNS: &[&str] = &["i", "we", "he", "she", "they", "someone", "somebody", "my", "our", "user", "it", "you"];
const VERBS_BEFORE_NAME: &[&str] =
    &["add", "create", "remove", "delete", "reset", "drop", "erase", "register", "give", "make"];

/// Words between an explicit name anchor ("username", "login name") and its value.
const EXPLICIT_SKIP: &[&str] = &[
    "should", "be", "is", "will", "must", "would", "shall", "of", "the", "name", "names", ":", "=", "to", "as", "id",
    "could",
];

/// A value given explicitly: "username should be nanny1", "login name: opa", "call the
/// account tbaker". It beats every description ("an account for our nanny").
pub(crate) fn explicit_username(toks: &[Tok]) -> Option<String> {
    if let Some(t) = after(toks, &["username", "userid", "user-name", "login", "loginname", "handle"], EXPLICIT_SKIP) {
        return Some(t.low.clone());
    }
    for w in toks.windows(2) {
        if w[0].low == "user" && w[0].trail.is_none() && ["name", "id"].contains(&w[1].low.as_str()) {
            if let Some(t) = after(toks, &[w[1].low.as_str()], EXPLICIT_SKIP) {
                return Some(t.low.clone());
            }
        }
    }
    // call the account tbaker / name the login opa
    after(toks, &["call", "name"], &["the", "it", "account", "user", "login", "him", "her", "them"])
        .filter(|_| toks.iter().any(|t| ["account", "user", "login"].contains(&t.low.as_str())))
        .map(|t| t.low.clone())
}

fn username(toks: &[Tok]) -> Option<String> {
    if let Some(name) = explicit_username(toks) {
        return Some(name);
    }
    if let Some(t) = toks.iter().find(|t| t.quoted && !is_filler(&t.low)) {
        return Some(t.low.clone());
    }
    if let Some(t) = after(toks, &["called", "named"], &[]) {
        return Some(t.low.clone());
    }
    // the account belonging to mark
    if let Some(t) = after(toks, &["belonging", "belongs", "owned"], &["to", "by"]) {
        return Some(t.low.clone());
    }
    if let Some(t) = after(toks, &["user", "username", "account", "login", "person", "member"], SKIP) {
        return Some(possessive(&t.low).unwrap_or(&t.low).to_string());
    }
    // the password of ana
    if let Some(t) = after(toks, &["password", "passwd", "pwd", "passwords"], &["of", "for", "from", "the", "user"]) {
        return Some(possessive(&t.low).unwrap_or(&t.low).to_string());
    }
    // bob's password / delete bob's account
    for w in toks.windows(2) {
        if let Some(base) = possessive(&w[0].low) {
            if ["password", "account", "login", "user", "passwd", "access"].contains(&w[1].low.as_str())
                && !is_filler(base)
            {
                return Some(base.to_string());
            }
        }
    }
    // bob forgot his password
    for w in toks.windows(2) {
        if ["forgot", "forgotten", "lost", "can't", "cannot"].contains(&w[1].low.as_str())
            && !PRONOUNS.contains(&w[0].low.as_str())
            && !is_filler(&w[0].low)
        {
            return Some(w[0].low.clone());
        }
    }
    if let Some(t) = after(toks, &["for"], SKIP) {
        return Some(possessive(&t.low).unwrap_or(&t.low).to_string());
    }
    after(toks, VERBS_BEFORE_NAME, &[]).map(|t| t.low.clone())
}

/// Name particles that may be lower case inside a full name.
const PARTICLES: &[&str] = &["de", "van", "von", "da", "del", "la", "le", "di", "du", "der", "den", "bin", "al", "dos"];

fn full_name(toks: &[Tok]) -> Option<String> {
    if let Some(name) = anchored_full_name(toks) {
        return Some(name);
    }
    // An aside in parentheses of capitalised words: "for our au pair (Sofia Rossi)".
    let words: Vec<&str> =
        toks.iter().skip_while(|t| !t.paren).take_while(|t| t.paren).map(|t| t.raw.as_str()).collect();
    let capitalised = |w: &&str| w.chars().next().is_some_and(char::is_uppercase) || PARTICLES.contains(w);
    (words.len() >= 2 && words.len() <= 6 && words.iter().all(capitalised)).then(|| words.join(" "))
}

fn anchored_full_name(toks: &[Tok]) -> Option<String> {
    for (i, t) in toks.iter().enumerate() {
        let prev = if i > 0 { toks[i - 1].low.as_str() } else { "" };
        let is_anchor = t.low == "name"
            && ["full", "the", "real", "display", "with", "whose", "his", "her"].contains(&prev)
            || t.low == "fullname";
        if !is_anchor || t.trail.is_some_and(|c| c != ':') {
            continue;
        }
        let mut j = i + 1;
        while toks.get(j).is_some_and(|n| ["is", "of", ":", "-"].contains(&n.low.as_str())) {
            j += 1;
        }
        if let Some(q) = toks.get(j).filter(|q| q.quoted) {
            return Some(q.raw.clone());
        }
        let mut words = Vec::new();
        while let Some(n) = toks.get(j) {
            let capital = n.raw.chars().next().is_some_and(char::is_uppercase);
            if words.len() >= 6 || !(capital || (!words.is_empty() && PARTICLES.contains(&n.low.as_str()))) {
                break;
            }
            words.push(n.raw.as_str());
            j += 1;
            if n.trail.is_some() {
                break;
            }
        }
        if !words.is_empty() {
            return Some(words.join(" "));
        }
    }
    None
}

/// Group names: "in the family group", "family and kids groups", "groups family, kids".
fn groups(toks: &[Tok]) -> Vec<String> {
    for (i, t) in toks.iter().enumerate() {
        if t.low != "group" && t.low != "groups" {
            continue;
        }
        // Backwards: "the family group", "family, kids and media groups".
        let mut names = Vec::new();
        let mut j = i;
        while j > 0 {
            let w = &toks[j - 1];
            let trail_ok = w.trail.is_none() || (!names.is_empty() && w.trail == Some(','));
            if !is_name_word(w) || !trail_ok {
                break;
            }
            names.push(w.low.clone());
            j -= 1;
            if j > 0 && ["and", "&"].contains(&toks[j - 1].low.as_str()) {
                j -= 1;
            } else if !(j > 0 && toks[j - 1].trail == Some(',')) {
                break;
            }
        }
        if !names.is_empty() {
            names.reverse();
            return names;
        }
        let list = list_after(toks, i, &["called", "named", "the", ":"]);
        if !list.is_empty() {
            return list;
        }
    }
    Vec::new()
}

fn is_name_word(t: &Tok) -> bool {
    !is_filler(&t.low)
        && !is_email_like(&t.low)
        && !t.low.is_empty()
        && t.low.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
}

/// "alice, bob and carol" starting after `toks[i]` (skipping `skip` words).
fn list_after(toks: &[Tok], i: usize, skip: &[&str]) -> Vec<String> {
    let mut j = i + 1;
    if matches!(toks.get(i).and_then(|t| t.trail), Some('.' | '!' | '?')) {
        return Vec::new();
    }
    while toks.get(j).is_some_and(|t| skip.contains(&t.low.as_str())) {
        j += 1;
    }
    let mut names = Vec::new();
    while let Some(t) = toks.get(j) {
        if !is_name_word(t) {
            break;
        }
        names.push(possessive(&t.low).unwrap_or(&t.low).to_string());
        j += 1;
        match (t.trail, toks.get(j).map(|n| n.low.as_str())) {
            (Some(','), Some("and" | "&" | "or")) => j += 1,
            (Some(','), _) => {}
            (None, Some("and" | "&" | "or")) => j += 1,
            _ => break,
        }
    }
    names
}

/// Users a share is for: "for alice and bob", "users alice, bob", "only alice".
fn user_list(toks: &[Tok]) -> Vec<String> {
    for (i, t) in toks.iter().enumerate() {
        if ["for", "users", "only", "members"].contains(&t.low.as_str()) {
            let list = list_after(toks, i, &["user", "users", ":"]);
            if !list.is_empty() {
                return list;
            }
        }
    }
    Vec::new()
}

const SHARE_WORDS: &[&str] = &["share", "folder", "directory", "drive"];
/// Words describing a share rather than naming it.
#[rustfmt::skip]
const SHARE_ADJECTIVES: &[&str] = &[
    "file", "shared", "read-only", "readonly", "only", "network", "public", "private", "samba", "smb", "windows",
    "writable",
];

fn share_name(toks: &[Tok]) -> Option<String> {
    if let Some(t) = after(toks, &["called", "named"], &[]) {
        return Some(t.raw.clone());
    }
    // … call it Library
    if let Some(t) = after(toks, &["call", "name"], &["it", "this", "that"]) {
        return Some(t.raw.clone());
    }
    if let Some(t) = toks.iter().find(|t| t.quoted && !is_filler(&t.low)) {
        return Some(t.raw.clone());
    }
    if let Some(t) = after(toks, SHARE_WORDS, &[":"]).filter(|t| !SHARE_ADJECTIVES.contains(&t.low.as_str())) {
        return Some(t.raw.clone());
    }
    if let Some(t) = before(toks, SHARE_WORDS, SHARE_ADJECTIVES) {
        return Some(t.raw.clone());
    }
    // "a share for photos": with no other name, what it is for names it.
    after(toks, &["for"], &[]).map(|t| t.raw.clone())
}

const MAIL_WORDS: &[&str] = &["mail", "email", "e-mail"];

/// `support@`: the address of an alias on this appliance, written without its domain.
pub(crate) fn is_alias_address(raw: &str) -> bool {
    raw.len() > 1 && raw.ends_with('@') && raw.matches('@').count() == 1
}

fn alias(toks: &[Tok]) -> Option<String> {
    if let Some(t) = toks.iter().find(|t| is_alias_address(&t.raw)) {
        return Some(local_part(&t.low));
    }
    let skip = &["called", "named", "for", "the", "a", "an", "new", "address", ":", "mail", "email", "e-mail"];
    if let Some(t) = after(toks, &["alias", "aliases"], skip) {
        return Some(local_part(&t.low));
    }
    if let Some(t) = before(toks, &["alias", "aliases"], MAIL_WORDS) {
        return Some(local_part(&t.low));
    }
    // send mail for family to alice
    for w in toks.windows(3) {
        if (MAIL_WORDS.contains(&w[0].low.as_str()) || ["mails", "emails", "messages"].contains(&w[0].low.as_str()))
            && ["for", "to"].contains(&w[1].low.as_str())
            && !is_filler(&w[2].low)
        {
            return Some(local_part(&w[2].low));
        }
    }
    // forward postmaster to bob@example.com
    after(toks, &["forward", "redirect", "route"], &["all", "mail", "email", "e-mail", "messages", "for", "the"])
        .map(|t| local_part(&t.low))
}

/// `info@home` → `info`: an alias is the local part.
fn local_part(s: &str) -> String {
    s.split('@').next().unwrap_or(s).to_string()
}

fn destination(toks: &[Tok]) -> Option<String> {
    let keep = |t: &Tok| if is_email_like(&t.raw) { t.raw.clone() } else { t.low.clone() };
    if let Some(t) = after(toks, &["->"], &[]) {
        return Some(keep(t));
    }
    // … should land in mom's inbox
    for w in toks.windows(2) {
        if ["inbox", "mailbox"].contains(&w[1].low.as_str()) {
            if let Some(base) = possessive(&w[0].low).filter(|b| !is_filler(b)) {
                return Some(base.to_string());
            }
        }
    }
    let skip = ["the", "user", "my", "account", "mailbox", "address", "inbox", "email", "mail", "his", "her", "their"];
    let last_to = toks.iter().rposition(|t| t.low == "to" || t.low == "into");
    if let Some(i) = last_to {
        let mut j = i + 1;
        while toks.get(j).is_some_and(|t| skip.contains(&t.low.as_str())) {
            j += 1;
        }
        if let Some(t) = toks.get(j).filter(|t| !is_filler(&t.low) && !is_alias_address(&t.raw)) {
            return Some(keep(t));
        }
    }
    toks.iter().find(|t| is_email_like(&t.raw)).map(keep)
}

/// Extra words for enum values (any value is also matched by its own name).
fn synonyms(value: &str) -> &'static [&'static str] {
    match value {
        "samba" => &[
            "smb",
            "file sharing",
            "file share",
            "file shares",
            "file server",
            "shares",
            "share",
            "sharing",
            "windows sharing",
            "network drive",
            "network drives",
            "cifs",
            "shared folders",
        ],
        "dns" => &["dnsmasq", "name server", "name service", "name resolution", "resolver", "dns server"],
        "mail" => &["email", "e-mail", "postfix", "smtp", "mail server", "mail service"],
        _ => &[],
    }
}

/// The enum value mentioned first.
pub(crate) fn enum_value(words: &str, values: &[Value]) -> Option<String> {
    let mut best: Option<(usize, &str)> = None;
    for v in values.iter().filter_map(Value::as_str) {
        let own = v.to_lowercase();
        for phrase in std::iter::once(own.as_str()).chain(synonyms(v).iter().copied()) {
            if let Some(pos) = words.find(&format!(" {phrase} ")) {
                if best.is_none_or(|(p, _)| pos < p) {
                    best = Some((pos, v));
                }
            }
        }
    }
    best.map(|(_, v)| v.to_string())
}

/// A boolean parameter named in the text: `read_only` by "read-only", "read only",
/// "readonly"; its opposite by "not read-only", "writable", "read-write".
fn flag(words: &str, name: &str) -> Option<bool> {
    let parts: Vec<&str> = name.split('_').collect();
    let spellings = [parts.join("-"), parts.join(" "), parts.join("")];
    let opposite: &[&str] = match name {
        "read_only" => &["writable", "writeable", "read-write", "read write", "read and write", "rw"],
        _ => &[],
    };
    if spellings.iter().any(|s| words.contains(&format!(" not {s} ")))
        || opposite.iter().any(|s| words.contains(&format!(" {s} ")))
    {
        return Some(false);
    }
    spellings.iter().any(|s| words.contains(&format!(" {s} "))).then_some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assistant::text::{joined, tokenize};
    use hearth_protocol::catalog::Catalog;
    use serde_json::json;

    fn p(action: &str, text: &str) -> Value {
        let toks = tokenize(text);
        Value::Object(params(&Catalog::embedded().action(action).unwrap().params, &toks, &joined(&toks)))
    }

    #[test]
    fn user_names_in_many_phrasings() {
        for (text, name) in [
            ("Add user John", "john"),
            ("can you add a new user called tom", "tom"),
            ("Delete account 'olduser'", "olduser"),
            ("delete bob's account", "bob"),
            ("bob forgot his password", "bob"),
            ("reset password for bob", "bob"),
            ("I forgot the password of user anna, can you reset it?", "anna"),
            ("Please create an account for maria with the name Maria Lopez", "maria"),
            ("add Jane as a user", "jane"),
            ("new user: sam", "sam"),
            ("create a login named \"pete\"", "pete"),
            ("Add user ../../etc/passwd", "../../etc/passwd"),
        ] {
            assert_eq!(p("users.remove", text)["username"], json!(name), "{text}");
        }
    }

    #[test]
    fn full_names_and_groups() {
        let v = p("users.add", "Please create an account for maria with the name Maria Lopez");
        assert_eq!(v, json!({"username": "maria", "full_name": "Maria Lopez"}));
        let v = p("users.add", "create an account for bob with the full name Bob van Dijk, please");
        assert_eq!(v["full_name"], "Bob van Dijk");
        let v = p("users.add", "add a new user called tom and put him in the family group");
        assert_eq!(v["groups"], json!(["family"]));
        let v = p("users.add", "add user lea to the family, kids and media groups");
        assert_eq!(v["groups"], json!(["family", "kids", "media"]));
        let v = p("users.add", "add user lea, groups: family and kids");
        assert_eq!(v["groups"], json!(["family", "kids"]));
        assert_eq!(p("users.add", "add user lea")["groups"], Value::Null);
    }

    #[test]
    fn shares() {
        assert_eq!(p("shares.add", "Create a shared folder called Photos"), json!({"name": "Photos"}));
        assert_eq!(
            p("shares.add", "Make a read-only share named Movies for alice and bob"),
            json!({"name": "Movies", "read_only": true, "users": ["alice", "bob"]})
        );
        assert_eq!(
            p("shares.add", "new share 'Kids' for anna, ben & carl, writable"),
            json!({"name": "Kids", "read_only": false, "users": ["anna", "ben", "carl"]})
        );
        assert_eq!(p("shares.remove", "Please remove the file share called Temp"), json!({"name": "Temp"}));
        assert_eq!(p("shares.remove", "delete the archive share"), json!({"name": "archive"}));
        assert_eq!(p("shares.add", "create a share for photos"), json!({"name": "photos"}));
        assert_eq!(p("shares.add", "Create a share named ../../etc"), json!({"name": "../../etc"}));
    }

    #[test]
    fn dns_certificates_and_services() {
        assert_eq!(
            p("dns.record.add", "Add a DNS entry printer.home pointing to 192.168.1.50"),
            json!({"hostname": "printer.home", "ip": "192.168.1.50"})
        );
        assert_eq!(p("dns.record.add", "add dns record evil.home pointing to 999.1.1.1")["ip"], "999.1.1.1");
        assert_eq!(
            p("dns.forwarders.set", "Use 1.1.1.1 and 9.9.9.9 as upstream DNS servers"),
            json!({"servers": ["1.1.1.1", "9.9.9.9"]})
        );
        assert_eq!(
            p("pki.cert.issue", "issue a certificate for media.home with alt names jellyfin.home and tv.home."),
            json!({"common_name": "media.home", "alt_names": ["jellyfin.home", "tv.home"]})
        );
        assert_eq!(p("service.restart", "Restart the file sharing service"), json!({"service": "samba"}));
        assert_eq!(p("service.restart", "The mail server seems stuck, please restart it"), json!({"service": "mail"}));
        assert_eq!(p("service.restart", "restart it"), json!({}));
        assert_eq!(p("service.restart", "restart the ssh service"), json!({"service": "ssh"}));
    }

    #[test]
    fn mail_aliases() {
        assert_eq!(
            p("mail.alias.add", "Create an email alias info that forwards to john"),
            json!({"alias": "info", "destination": "john"})
        );
        assert_eq!(
            p("mail.alias.add", "add mail alias billing -> accounts@example.org"),
            json!({"alias": "billing", "destination": "accounts@example.org"})
        );
        assert_eq!(
            p("mail.alias.add", "send mail for family to alice"),
            json!({"alias": "family", "destination": "alice"})
        );
        assert_eq!(
            p("mail.alias.add", "forward postmaster to Bob.Smith@Example.com"),
            json!({"alias": "postmaster", "destination": "Bob.Smith@Example.com"})
        );
        assert_eq!(p("mail.alias.remove", "remove the family mail alias"), json!({"alias": "family"}));
        assert_eq!(p("mail.alias.remove", "Remove the alias sales"), json!({"alias": "sales"}));
    }
}
