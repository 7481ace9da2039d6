//! Languages of the rules backend: English, German and Spanish. The language of a request
//! is detected from its own words ([`detect`]); a German or Spanish request is carried over
//! into the English words the rules understand ([`to_english`]: a word list, with German
//! separable verbs such as "lege … an"), values kept exactly as written; the answer is then
//! given in the request's language (the sentences of [`super::vet`], [`super::facts`] and
//! [`super::rules`] take a [`Lang`]).

use serde::{Deserialize, Serialize};

use super::text::Tok;

/// A language the rules backend answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    En,
    De,
    Es,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::De => "de",
            Lang::Es => "es",
        }
    }

    /// `en`, `de` or `es` (anything else: English).
    pub fn from_code(code: &str) -> Lang {
        match code {
            "de" => Lang::De,
            "es" => Lang::Es,
            _ => Lang::En,
        }
    }

    /// One of three spellings of a sentence.
    pub(crate) fn pick<'a>(self, en: &'a str, de: &'a str, es: &'a str) -> &'a str {
        match self {
            Lang::En => en,
            Lang::De => de,
            Lang::Es => es,
        }
    }
}

/// Words that only (or mostly) German requests use; weight 2 for the distinctive ones.
#[rustfmt::skip]
const GERMAN: &[(&str, u8)] = &[
    ("der", 1), ("die", 1), ("das", 1), ("den", 1), ("dem", 1), ("ein", 1), ("eine", 1), ("einen", 2), ("einem", 2),
    ("bitte", 2), ("und", 2), ("ist", 1), ("mein", 2), ("meine", 2), ("meinen", 2), ("ich", 2), ("wir", 1),
    ("soll", 2), ("sollen", 2), ("von", 1), ("für", 2), ("neu", 1), ("neue", 2), ("neuen", 2), ("neuer", 2),
    ("benutzer", 2), ("nutzer", 2), ("konto", 2), ("freigabe", 2), ("ordner", 2), ("lösche", 2), ("löschen", 2),
    ("erstelle", 2), ("erstellen", 2), ("lege", 2), ("leg", 2), ("anlegen", 2), ("starte", 2), ("starten", 2),
    ("entferne", 2), ("entfernen", 2), ("setze", 2), ("passwort", 2), ("kennwort", 2), ("zurück", 2), ("wie", 1),
    ("viel", 2), ("noch", 2), ("frei", 2), ("nicht", 2), ("auf", 1), ("zeigen", 2), ("brauche", 2),
    ("brauchen", 2), ("danach", 2), ("dann", 2), ("gehen", 2), ("füge", 2), ("hinzu", 2), ("stelle", 2),
    ("zertifikat", 2), ("neustart", 2), ("neustarten", 2), ("speicherplatz", 2), ("dienst", 2), ("läuft", 2),
    ("alles", 2), ("gerät", 2), ("mails", 1), ("weiterleiten", 2), ("eintrag", 2), ("mach", 2), ("mache", 2),
    ("erzeuge", 2), ("stimmt", 2), ("geht", 2), ("es", 1), ("nutzen", 2), ("mehr", 2),
];

#[rustfmt::skip]
const SPANISH: &[(&str, u8)] = &[
    ("el", 1), ("la", 1), ("los", 2), ("las", 2), ("un", 1), ("una", 2), ("de", 1), ("del", 2), ("y", 2),
    ("que", 2), ("por", 2), ("favor", 2), ("crea", 2), ("crear", 2), ("créame", 2), ("usuario", 2), ("cuenta", 2),
    ("elimina", 2), ("eliminar", 2), ("borra", 2), ("borrar", 2), ("restablece", 2), ("restablecer", 2),
    ("restablécela", 2), ("contraseña", 2), ("carpeta", 2), ("compartida", 2), ("reinicia", 2), ("reiniciar", 2),
    ("servidor", 2), ("correo", 2), ("aparato", 2), ("haz", 2), ("apunte", 2), ("apunta", 2), ("está", 2),
    ("mi", 2), ("en", 1), ("línea", 2), ("llamado", 2), ("llamada", 2), ("nuevo", 2), ("nueva", 2), ("añade", 2),
    ("añadir", 2), ("agrega", 2), ("olvidé", 2), ("quiero", 2), ("necesito", 2), ("emite", 2), ("emitir", 2),
    ("certificado", 2), ("para", 2), ("cuánto", 2), ("cuanto", 2), ("espacio", 2), ("libre", 2), ("queda", 2),
    ("disco", 2), ("luego", 2), ("después", 2), ("servicio", 2), ("equipo", 2), ("caja", 2), ("quita", 2),
    ("todo", 2), ("bien", 2), ("funciona", 2), ("reenvía", 2), ("reenviar", 2), ("ya", 1), ("no", 1),
];

#[rustfmt::skip]
const ENGLISH: &[&str] = &[
    "the", "a", "an", "please", "user", "add", "to", "for", "and", "is", "my", "of", "create", "delete", "remove",
    "share", "reset", "password", "restart", "how", "what", "can", "you", "i", "we", "need", "want", "it", "with",
    "new", "account", "folder", "should", "called", "named", "make", "then", "also", "from", "on", "in", "up",
];

/// The language of a request: German or Spanish when their words clearly outweigh English
/// ones, else English.
pub fn detect(toks: &[Tok]) -> Lang {
    let score = |list: &[(&str, u8)]| -> u32 {
        toks.iter().filter_map(|t| list.iter().find(|(w, _)| *w == t.low).map(|(_, s)| u32::from(*s))).sum()
    };
    let en = toks.iter().filter(|t| ENGLISH.contains(&t.low.as_str())).count() as u32 * 2;
    let (de, es) = (score(GERMAN), score(SPANISH));
    if de >= 2 && de > es && de > en {
        Lang::De
    } else if es >= 2 && es > de && es > en {
        Lang::Es
    } else {
        Lang::En
    }
}

/// German and Spanish words and phrases (lower case, tokens separated by spaces) as the
/// English words the rules know; an empty replacement drops the words.
#[rustfmt::skip]
const DE_WORDS: &[(&str, &str)] = &[
    ("dns-eintrag", "dns record"), ("dns-dienst", "dns service"), ("dns-server", "dns servers"),
    ("mail-server", "mail server"), ("mailserver", "mail server"), ("e-mail-server", "mail server"),
    ("mail-alias", "mail alias"), ("e-mail-alias", "mail alias"), ("mailalias", "mail alias"),
    ("dateifreigabe", "share"), ("netzlaufwerk", "share"), ("freigabe", "share"), ("freigaben", "shares"),
    ("ordner", "folder"), ("benutzer", "user"), ("benutzerin", "user"), ("nutzer", "user"),
    ("benutzerkonto", "account"), ("konto", "account"), ("zugang", "account"), ("benutzername", "username"),
    ("passwort", "password"), ("kennwort", "password"), ("zertifikat", "certificate"), ("eintrag", "record"),
    ("dienst", "service"), ("gerät", "box"), ("namens", "named"), ("genannt", "named"), ("mit dem namen", "named"),
    ("namen", "name"), ("für", "for"), ("von", "of"), ("mit", "with"), ("und", "and"), ("dann", "then"),
    ("danach", "then"), ("anschließend", "then"), ("auch", "also"), ("bitte", "please"), ("ein", "a"), ("eine", "a"),
    ("einen", "a"), ("einem", "a"), ("der", "the"), ("die", "the"), ("das", "the"), ("den", "the"), ("dem", "the"),
    ("neuen", "new"), ("neue", "new"), ("neuer", "new"), ("neues", "new"), ("soll", "should"), ("sollen", "should"),
    ("auf", "to"), ("an", "to"), ("zu", "to"), ("zeigen", "point"), ("zeigt", "point"), ("gehen", "go"),
    ("landen", "go"), ("weiterleiten", "forward"), ("leite", "forward"), ("mails", "mail"), ("e-mails", "mail"),
    ("e-mail", "mail"), ("post", "mail"), ("ist", "is"), ("sind", "are"), ("mein", "my"), ("meine", "my"),
    ("meinen", "my"), ("unser", "our"), ("unsere", "our"), ("ich", "i"), ("wir", "we"), ("brauche", "need"),
    ("brauchen", "need"), ("möchte", "want"), ("will", "want"), ("nicht mehr", "no longer"), ("nicht", "not"),
    ("kein", "no"), ("keine", "no"), ("lösche", "delete"), ("löschen", "delete"), ("entferne", "remove"),
    ("entfernen", "remove"), ("erstelle", "create"), ("erstellen", "create"), ("erzeuge", "create"),
    ("erzeugen", "create"), ("mach", "make"), ("mache", "make"), ("machen", "make"), ("anlegen", "add"),
    ("hinzufügen", "add"), ("zurücksetzen", "reset"), ("neustarten", "restart"), ("neu starten", "restart"),
    ("neustart", "restart"), ("ausstellen", "issue"), ("vergessen", "forgot"), ("vergessen hat", "forgot"),
    ("wie viel", "how much"), ("wieviel", "how much"), ("speicherplatz", "disk space"), ("platz", "space"),
    ("frei", "free"), ("noch", ""), ("wie", "how"), ("was", "what"), ("läuft", "running"), ("alles", "everything"),
    ("in ordnung", "ok"), ("nur lesen", "read-only"), ("schreibgeschützt", "read-only"), ("nur-lesen", "read-only"),
    ("gruppe", "group"), ("gruppen", "groups"), ("als", "as"), ("dns-server", "dns servers"), ("setze", "set"),
];

#[rustfmt::skip]
const ES_WORDS: &[(&str, &str)] = &[
    ("carpeta compartida", "share"), ("recurso compartido", "share"), ("unidad compartida", "share"),
    ("carpeta", "folder"), ("compartida", "shared"), ("usuario", "user"), ("usuaria", "user"), ("cuenta", "account"),
    ("nombre de usuario", "username"), ("contraseña", "password"), ("clave", "password"),
    ("certificado", "certificate"), ("servidor de correo", "mail server"), ("servidor dns", "dns server"),
    ("servidores dns", "dns servers"), ("alias de correo", "mail alias"), ("correo", "mail"), ("correos", "mail"),
    ("servicio", "service"), ("aparato", "box"), ("equipo", "box"), ("caja", "box"), ("dispositivo", "box"),
    ("servidor", "server"), ("registro", "record"), ("entrada", "record"), ("llamado", "named"), ("llamada", "named"),
    ("crea", "create"), ("crear", "create"), ("créame", "create"), ("añade", "add"), ("añadir", "add"),
    ("agrega", "add"), ("agregar", "add"), ("elimina", "remove"), ("eliminar", "remove"), ("borra", "delete"),
    ("borrar", "delete"), ("quita", "remove"), ("quitar", "remove"), ("restablece", "reset"),
    ("restablecer", "reset"), ("restablécela", "reset"), ("restablécelo", "reset"), ("resetea", "reset"),
    ("reinicia", "restart"), ("reiniciar", "restart"), ("reinicie", "restart"), ("emite", "issue"),
    ("emitir", "issue"), ("genera", "issue"), ("haz que", "make"), ("haz", "make"), ("apunte", "point"),
    ("apunta", "point"), ("apuntar", "point"), ("reenvía", "forward"), ("reenviar", "forward"), ("a", "to"),
    ("al", "to the"), ("y luego", "then"), ("y después", "then"), ("luego", "then"), ("después", "then"),
    ("y", "and"), ("también", "also"), ("de", "of"), ("del", "of the"), ("para", "for"), ("en línea", "online"),
    ("conectado", "online"), ("está", "is"), ("es", "is"), ("mi", "my"), ("mis", "my"), ("nuestro", "our"),
    ("el", "the"), ("la", "the"), ("los", "the"), ("las", "the"), ("un", "a"), ("una", "a"), ("nuevo", "new"),
    ("nueva", "new"), ("quiero", "want"), ("necesito", "need"), ("olvidé", "forgot"), ("olvidó", "forgot"),
    ("ya no", "no longer"), ("no", "not"), ("cuánto", "how much"), ("cuanto", "how much"), ("espacio", "space"),
    ("disco", "disk"), ("libre", "free"), ("queda", "left"), ("que", ""), ("por favor", "please"), ("todo", "everything"),
    ("bien", "ok"), ("funciona", "working"), ("solo lectura", "read-only"), ("grupo", "group"), ("grupos", "groups"),
    ("como", "as"), ("con", "with"), ("en", "in"),
];

/// German separable verbs: the verb, the particle that ends its clause, and the English.
#[rustfmt::skip]
const DE_SEPARABLE: &[(&[&str], &str, &str)] = &[
    (&["lege", "leg", "legen", "legt"], "an", "add"),
    (&["starte", "starten", "startet", "start"], "neu", "restart"),
    (&["setze", "setzen", "setzt", "setz"], "zurück", "reset"),
    (&["füge", "fügen", "fügt", "füg"], "hinzu", "add"),
    (&["stelle", "stellen", "stellt", "stell"], "aus", "issue"),
];

/// The request's words in English, values (names, addresses) as written.
pub(crate) fn to_english(toks: Vec<Tok>, lang: Lang) -> Vec<Tok> {
    let words = match lang {
        Lang::En => return toks,
        Lang::De => DE_WORDS,
        Lang::Es => ES_WORDS,
    };
    let mut toks = toks;
    if lang == Lang::De {
        separable(&mut toks);
    }
    let mut out = Vec::with_capacity(toks.len());
    let mut i = 0;
    'next: while i < toks.len() {
        if !toks[i].quoted {
            for n in [3, 2, 1] {
                if i + n > toks.len() || toks[i..i + n - 1].iter().any(|t| t.trail.is_some() || t.quoted) {
                    continue;
                }
                let phrase: Vec<&str> = toks[i..i + n].iter().map(|t| t.low.as_str()).collect();
                let phrase = phrase.join(" ");
                if let Some((_, english)) = words.iter().find(|(w, _)| *w == phrase) {
                    let trail = toks[i + n - 1].trail;
                    let parts: Vec<&str> = english.split_whitespace().collect();
                    let last = parts.len().saturating_sub(1);
                    for (k, p) in parts.iter().enumerate() {
                        out.push(Tok {
                            raw: (*p).to_string(),
                            low: (*p).to_string(),
                            quoted: false,
                            trail: if k == last { trail } else { None },
                            paren: false,
                        });
                    }
                    // A dropped word keeps its punctuation on the word before.
                    if parts.is_empty() {
                        if let (Some(prev), Some(c)) = (out.last_mut(), trail) {
                            prev.trail.get_or_insert(c);
                        }
                    }
                    i += n;
                    continue 'next;
                }
            }
        }
        out.push(toks[i].clone());
        i += 1;
    }
    out
}

/// "Lege … an" → "add …": the verb becomes the English one and its particle, found at the
/// end of the verb's clause, is dropped.
fn separable(toks: &mut Vec<Tok>) {
    let mut i = 0;
    while i < toks.len() {
        let hit = DE_SEPARABLE.iter().find(|(verbs, _, _)| verbs.contains(&toks[i].low.as_str()));
        if let Some((_, particle, english)) = hit {
            // The clause ends at punctuation or at "und"/"dann".
            let mut end = i;
            while end + 1 < toks.len()
                && toks[end].trail.is_none()
                && !["und", "dann"].contains(&toks[end + 1].low.as_str())
            {
                end += 1;
            }
            if end > i && toks[end].low == *particle {
                let trail = toks[end].trail;
                toks.remove(end);
                if let (Some(c), Some(prev)) = (trail, toks.get_mut(end - 1)) {
                    prev.trail.get_or_insert(c);
                }
                toks[i] = Tok {
                    raw: (*english).into(),
                    low: (*english).into(),
                    quoted: false,
                    trail: toks[i].trail,
                    paren: false,
                };
            }
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assistant::text::{joined, tokenize};

    fn english(text: &str) -> (Lang, String) {
        let toks = tokenize(text);
        let lang = detect(&toks);
        (lang, joined(&to_english(toks, lang)).trim().to_string())
    }

    #[test]
    fn german_and_spanish_requests_become_english_words_with_values_kept() {
        assert_eq!(
            english("Lege bitte einen Benutzer namens jonas an"),
            (Lang::De, "add please a user named jonas".into())
        );
        assert_eq!(english("Starte die Box neu"), (Lang::De, "restart the box".into()));
        assert_eq!(english("Erstelle eine Freigabe namens Fotos").1, "create a share named fotos");
        let toks = to_english(tokenize("Erstelle eine Freigabe namens Fotos"), Lang::De);
        assert_eq!(toks.last().map(|t| t.raw.as_str()), Some("Fotos"));
        assert_eq!(
            english("Crea una carpeta compartida llamada Fotos"),
            (Lang::Es, "create a share named fotos".into())
        );
        assert_eq!(english("¿Está mi equipo en línea?"), (Lang::Es, "is my box online".into()));
        assert_eq!(english("Reinicia el servidor de correo").1, "restart the mail server");
    }

    #[test]
    fn english_stays_english() {
        for text in ["Add user John", "restart the dns server", "is my box ok?", "add user ana", "remove alias de"] {
            assert_eq!(english(text).0, Lang::En, "{text}");
        }
        assert_eq!(english("Borra el alias ventas").0, Lang::Es);
        assert_eq!(english("Ist meine Box online?").0, Lang::De);
    }
}
