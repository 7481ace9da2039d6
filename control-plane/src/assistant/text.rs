//! The words of a message: tokens with surrounding punctuation stripped (and remembered),
//! quoted spans kept together, and the shapes of values (host names, IP addresses, e-mail
//! addresses) recognised. Used by the rules backend and the knowledge base.

/// One word (or one quoted span) of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tok {
    /// As typed, without surrounding quotes, brackets and trailing punctuation.
    pub raw: String,
    pub low: String,
    /// It was written in quotes.
    pub quoted: bool,
    /// The punctuation that followed it (`,` `;` `.` `!` `?` `:`), if any.
    pub trail: Option<char>,
    /// It was written inside parentheses: an aside such as a full name.
    pub paren: bool,
}

const OPENERS: &[char] = &['"', '\'', '“', '‘', '«', '(', '[', '{', '<', '`', '¿', '¡'];
const CLOSERS: &[char] = &['"', '\'', '”', '’', '»', ')', ']', '}', '>', '`'];
const QUOTES: &[char] = &['"', '\'', '“', '”', '‘', '’', '«', '»', '`'];
const TRAILING: &[char] = &[',', ';', '.', '!', '?', ':'];

/// The arrow spellings people use for "goes to"; each becomes the token `->`.
const ARROWS: &[&str] = &["->", "→", "=>"];

pub(crate) fn tokenize(text: &str) -> Vec<Tok> {
    let mut spaced = text.to_string();
    for a in ARROWS {
        spaced = spaced.replace(a, " -> ");
    }
    // `CN=vault.home`, `username=bob`: a key and its value are two words.
    let spaced: String = spaced
        .split_whitespace()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() && k.chars().all(char::is_alphabetic) => format!("{k} {v}"),
            _ => w.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ");
    let pieces: Vec<&str> = spaced.split_whitespace().collect();
    let mut in_paren = false;
    let mut toks = Vec::with_capacity(pieces.len());
    let mut i = 0;
    while i < pieces.len() {
        let piece = pieces[i];
        // A quoted span of several words stays one token: 'My Photos'.
        let mut end = i;
        if piece.starts_with(QUOTES) && !closes_quote(&piece[piece.chars().next().map_or(0, char::len_utf8)..]) {
            if let Some(j) = (i + 1..pieces.len().min(i + 8)).find(|&j| closes_quote(pieces[j])) {
                end = j;
            }
        }
        let joined = pieces[i..=end].join(" ");
        let opens = joined.starts_with('(');
        let closes = joined.trim_end_matches(TRAILING).ends_with(')');
        if let Some(mut t) = clean(&joined) {
            t.paren = in_paren || opens;
            toks.push(t);
        }
        in_paren = (in_paren || opens) && !closes;
        i = end + 1;
    }
    toks
}

fn closes_quote(piece: &str) -> bool {
    piece.trim_end_matches(TRAILING).ends_with(QUOTES)
}

fn clean(piece: &str) -> Option<Tok> {
    if piece == "->" {
        return Some(Tok { raw: piece.into(), low: piece.into(), quoted: false, trail: None, paren: false });
    }
    let mut s = piece;
    let mut quoted = false;
    let mut trail = None;
    loop {
        let before = s;
        if let Some(c) = s.chars().next().filter(|c| OPENERS.contains(c)) {
            quoted |= QUOTES.contains(&c);
            s = &s[c.len_utf8()..];
        }
        if let Some(c) = s.chars().last() {
            if CLOSERS.contains(&c) {
                quoted |= QUOTES.contains(&c);
                s = &s[..s.len() - c.len_utf8()];
            } else if TRAILING.contains(&c) {
                trail.get_or_insert(c);
                s = &s[..s.len() - c.len_utf8()];
            }
        }
        if s == before {
            break;
        }
    }
    (!s.is_empty()).then(|| Tok { raw: s.to_string(), low: s.to_lowercase(), quoted, trail, paren: false })
}

/// The lower-case words joined by single spaces, with a space at both ends, so that
/// `contains(" file sharing ")` matches whole words only.
pub(crate) fn joined(toks: &[Tok]) -> String {
    let mut s = String::from(" ");
    for t in toks {
        s.push_str(&t.low);
        s.push(' ');
    }
    s
}

/// `bob's` → `bob`.
pub(crate) fn possessive(low: &str) -> Option<&str> {
    low.strip_suffix("'s").or_else(|| low.strip_suffix("’s")).filter(|b| !b.is_empty())
}

/// Four (or more) dot-separated groups of digits: an IPv4 address or a mistyped one
/// (`999.1.1.1`, `8.8.8.8.8`), which the catalog validator then refuses by name.
pub(crate) fn is_ipv4_like(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() >= 4 && parts.iter().all(|p| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit()))
}

pub(crate) fn is_ipv6_like(s: &str) -> bool {
    s.matches(':').count() >= 2 && s.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
}

pub(crate) fn is_ip_like(s: &str) -> bool {
    is_ipv4_like(s) || is_ipv6_like(s)
}

pub(crate) fn is_email_like(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => !local.is_empty() && domain.contains('.') && !domain.contains('@'),
        None => false,
    }
}

/// Something written like a DNS name: two or more labels, the last one with a letter.
/// Wildcards are kept (the validator refuses them with a reason).
pub(crate) fn is_hostname_like(s: &str) -> bool {
    const NOT_NAMES: &[&str] = &["e.g", "i.e", "a.m", "p.m", "etc"];
    if s.contains(['@', '/', '\\'])
        || s.contains("://")
        || is_ip_like(s)
        || NOT_NAMES.contains(&s.to_lowercase().as_str())
    {
        return false;
    }
    let labels: Vec<&str> = s.split('.').collect();
    labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '*')))
        && labels.last().is_some_and(|l| l.chars().any(char::is_alphabetic))
}

/// At most `max` characters, with `…` when cut.
pub(crate) fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raws(text: &str) -> Vec<String> {
        tokenize(text).into_iter().map(|t| t.raw).collect()
    }

    #[test]
    fn punctuation_and_quotes() {
        assert_eq!(
            raws("Remove the user kevin, he moved out."),
            ["Remove", "the", "user", "kevin", "he", "moved", "out"]
        );
        let t = tokenize("Delete account 'olduser'");
        assert_eq!((t[2].raw.as_str(), t[2].quoted), ("olduser", true));
        assert_eq!(tokenize("anna, can")[0].trail, Some(','));
        assert_eq!(raws("a share named \"My Photos\" please"), ["a", "share", "named", "My Photos", "please"]);
        assert_eq!(raws("named ../../etc"), ["named", "../../etc"]);
        assert_eq!(raws("billing->accounts@example.org"), ["billing", "->", "accounts@example.org"]);
        assert_eq!(raws("bob's password?"), ["bob's", "password"]);
        assert_eq!(raws(".. ?"), Vec::<String>::new());
        assert_eq!(raws("(x.home)."), ["x.home"]);
        assert_eq!(raws("issue a cert, CN=vault.home"), ["issue", "a", "cert", "CN", "vault.home"]);
        let t = tokenize("for our au pair (Sofia Rossi), username sofia");
        let paren: Vec<bool> = t.iter().map(|t| t.paren).collect();
        assert_eq!(paren, [false, false, false, false, true, true, false, false]);
        assert_eq!(raws("¿Está mi equipo en línea?"), ["Está", "mi", "equipo", "en", "línea"]);
    }

    #[test]
    fn value_shapes() {
        for ok in ["printer.home", "NAS.lan", "a.b.internal", "*.home", "evil.com", "media-1.home"] {
            assert!(is_hostname_like(ok), "{ok}");
        }
        for no in ["1.1.1.1", "e.g", "bob@example.com", "http://x.home", "../../etc", "home", "v1.2", "x.sh/y"] {
            assert!(!is_hostname_like(no), "{no}");
        }
        assert!(
            is_ip_like("999.1.1.1") && is_ip_like("192.168.1.50") && is_ip_like("2620:fe::fe") && is_ip_like("::1")
        );
        assert!(!is_ip_like("1.1.1") && !is_ip_like("10:30"));
        assert!(is_email_like("accounts@example.org") && !is_email_like("@x.org") && !is_email_like("bob@localhost"));
        assert_eq!(possessive("bob's"), Some("bob"));
        assert_eq!(shorten("abcdef", 4), "abc…");
    }
}
