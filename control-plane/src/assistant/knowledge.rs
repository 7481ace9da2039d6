//! The knowledge base: short articles in `control-plane/assistant/knowledge/*.md`,
//! embedded at build time. Each starts with `# Title` and a `keywords:` line. The rules
//! backend answers a question with the article whose keywords match it best; the LLM gets
//! all of them in its system prompt.

use std::collections::HashSet;
use std::sync::OnceLock;

/// One article.
#[derive(Debug)]
pub(crate) struct Article {
    pub slug: &'static str,
    pub title: &'static str,
    pub keywords: Vec<&'static str>,
    /// The text after the keywords line.
    pub body: &'static str,
}

const FILES: &[(&str, &str)] = &[
    ("what-the-appliance-does", include_str!("../../assistant/knowledge/what-the-appliance-does.md")),
    ("shares-from-windows", include_str!("../../assistant/knowledge/shares-from-windows.md")),
    ("shares-from-mac", include_str!("../../assistant/knowledge/shares-from-mac.md")),
    ("mail-on-your-phone", include_str!("../../assistant/knowledge/mail-on-your-phone.md")),
    ("slow-or-no-internet", include_str!("../../assistant/knowledge/slow-or-no-internet.md")),
    ("appliance-offline", include_str!("../../assistant/knowledge/appliance-offline.md")),
    ("certificates", include_str!("../../assistant/knowledge/certificates.md")),
    ("passwords", include_str!("../../assistant/knowledge/passwords.md")),
];

/// Words too common to tell articles apart.
#[rustfmt::skip]
const STOP: &[&str] = &[
    "a", "an", "the", "i", "my", "me", "we", "our", "you", "your", "is", "are", "it", "to", "of", "on", "in", "and",
    "or", "how", "do", "can", "why", "from", "with", "this", "that", "be", "there", "what", "does", "for",
];

pub(crate) fn articles() -> &'static [Article] {
    static ARTICLES: OnceLock<Vec<Article>> = OnceLock::new();
    ARTICLES.get_or_init(|| FILES.iter().map(|(slug, text)| parse(slug, text)).collect())
}

/// An article file without a title or keywords line is a build mistake caught by the tests.
fn parse(slug: &'static str, text: &'static str) -> Article {
    let mut lines = text.splitn(3, '\n');
    let title = lines.next().unwrap_or_default().trim_start_matches('#').trim();
    let keywords_line = lines.next().unwrap_or_default();
    let keywords = keywords_line
        .strip_prefix("keywords:")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .collect();
    let body = lines.next().unwrap_or_default().trim();
    Article { slug, title, keywords, body }
}

/// The article sharing the most distinctive words with `words` (lower case), if any.
pub(crate) fn best_match<'a, I: IntoIterator<Item = &'a str>>(words: I) -> Option<&'static Article> {
    let words: HashSet<&str> = words.into_iter().filter(|w| !STOP.contains(w)).collect();
    let mut best: Option<(usize, &Article)> = None;
    for a in articles() {
        let score = a.keywords.iter().filter(|k| !STOP.contains(k) && words.contains(**k)).count();
        if score > 0 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, a));
        }
    }
    best.map(|(_, a)| a)
}

pub(crate) fn by_slug(slug: &str) -> Option<&'static Article> {
    articles().iter().find(|a| a.slug == slug)
}

/// Every article, for the LLM's system prompt.
pub(crate) fn all_as_markdown() -> String {
    articles().iter().map(|a| format!("### {}\n\n{}\n", a.title, a.body)).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_article_has_a_title_keywords_and_a_body() {
        assert_eq!(articles().len(), FILES.len());
        for a in articles() {
            assert!(!a.title.is_empty() && !a.title.starts_with("keywords"), "{}", a.slug);
            assert!(a.keywords.len() >= 5, "{} has too few keywords", a.slug);
            assert!(a.body.len() > 100 && !a.body.starts_with("keywords"), "{}", a.slug);
        }
    }

    #[test]
    fn questions_find_their_article() {
        let slug = |q: &str| {
            let words: Vec<String> =
                q.split_whitespace().map(|w| w.trim_matches(['?', '.', ',']).to_lowercase()).collect();
            best_match(words.iter().map(String::as_str)).map(|a| a.slug)
        };
        assert_eq!(slug("How do I access my files from Windows?"), Some("shares-from-windows"));
        assert_eq!(slug("how can I open the shared folders on my macbook"), Some("shares-from-mac"));
        assert_eq!(slug("How do I set up email on my phone?"), Some("mail-on-your-phone"));
        assert_eq!(slug("Why is my internet slow?"), Some("slow-or-no-internet"));
        assert_eq!(slug("my browser says the site is not secure"), Some("certificates"));
        assert_eq!(slug("what features does the box have"), Some("what-the-appliance-does"));
        assert_eq!(slug("zzz qqq"), None);
    }
}
