//! Text normalisation and ranking for library search. Pure functions: no
//! storage, no I/O, so the subtle parts are unit-tested in isolation.
//!
//! Matching is case- and diacritic-insensitive ("sigur ros" finds "Sigur
//! Rós"): both sides are folded to lowercase ASCII-ish text by Unicode
//! decomposition (NFKD) minus combining marks, plus a few letters that do not
//! decompose (ø, ß, æ, ł ...). Non-Latin scripts are kept as they are.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Field separator inside a stored search document.
pub const SEP: char = '\u{1f}';

/// Fold text for matching: lowercase, strip diacritics, punctuation to spaces,
/// runs of spaces collapsed.
pub fn normalize(s: &str) -> String {
    if s.is_ascii() {
        normalize_ascii(s)
    } else {
        normalize_unicode(s)
    }
}

fn normalize_unicode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.nfkd() {
        if is_combining_mark(c) {
            continue;
        }
        let mapped: &str = match c {
            'ø' | 'Ø' => "o",
            'ß' => "ss",
            'æ' | 'Æ' => "ae",
            'œ' | 'Œ' => "oe",
            'ł' | 'Ł' => "l",
            'đ' | 'Đ' | 'ð' | 'Ð' => "d",
            'þ' | 'Þ' => "th",
            'ı' => "i",
            _ => "",
        };
        let mut push = |ch: char| {
            if ch.is_alphanumeric() {
                if pending_space && !out.is_empty() {
                    out.push(' ');
                }
                pending_space = false;
                out.extend(ch.to_lowercase());
            } else {
                pending_space = true;
            }
        };
        if mapped.is_empty() {
            push(c);
        } else {
            mapped.chars().for_each(push);
        }
    }
    out
}

/// [`normalize`] for ASCII text, which needs no decomposition (the common
/// case, and the scanner's hot path).
fn normalize_ascii(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(char::from(b.to_ascii_lowercase()));
        } else {
            pending_space = true;
        }
    }
    out
}

/// The stored search document of a track: normalised title, artists and
/// album, separated by [`SEP`].
pub fn document(title: &str, artists: &str, album: &str) -> String {
    let mut d = normalize(title);
    d.push(SEP);
    d.push_str(&normalize(artists));
    d.push(SEP);
    d.push_str(&normalize(album));
    d
}

/// A parsed query: normalised tokens plus the whole normalised string.
pub struct Query {
    /// The whole query, normalised (see [`normalize`]).
    pub whole: String,
    /// The normalised query split on spaces, empty tokens dropped.
    pub tokens: Vec<String>,
    finders: Vec<memchr::memmem::Finder<'static>>,
}

impl Query {
    /// Parse the user's query text.
    pub fn new(q: &str) -> Query {
        let whole = normalize(q);
        let tokens: Vec<String> = whole
            .split(' ')
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect();
        let finders = tokens
            .iter()
            .map(|t| memchr::memmem::Finder::new(t.as_bytes()).into_owned())
            .collect();
        Query {
            whole,
            tokens,
            finders,
        }
    }

    /// The query has no tokens (blank after normalisation): it matches
    /// nothing, and [`Index::search`](crate::index::Index::search) returns no hits.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Score a document, or `None` when some token matches no field.
    ///
    /// Each token contributes its best match over the fields: a whole word
    /// beats a word prefix beats a substring, and title beats artist beats
    /// album. A field equal to the whole query earns a large bonus, so the
    /// exact title ranks first.
    pub fn score(&self, doc: &str) -> Option<u32> {
        let bytes = doc.as_bytes();
        // Cheap rejection first: every token must occur somewhere.
        if !self.finders.iter().all(|f| f.find(bytes).is_some()) {
            return None;
        }
        const FIELD_WEIGHT: [u32; 3] = [6, 4, 3];
        let mut fields = doc.split(SEP);
        let fields: [&str; 3] = [
            fields.next().unwrap_or(""),
            fields.next().unwrap_or(""),
            fields.next().unwrap_or(""),
        ];
        let mut total = 0;
        for finder in &self.finders {
            let mut best = 0;
            for (field, weight) in fields.iter().zip(FIELD_WEIGHT) {
                let q = quality(finder, field);
                best = best.max(q * weight);
            }
            if best == 0 {
                return None;
            }
            total += best;
        }
        for (field, bonus) in fields.iter().zip([60, 30, 15]) {
            if *field == self.whole {
                total += bonus;
            } else if field.starts_with(&self.whole) {
                total += bonus / 3;
            }
        }
        Some(total)
    }
}

/// 3 = whole word, 2 = word prefix, 1 = inside a word, 0 = absent.
fn quality(finder: &memchr::memmem::Finder<'_>, field: &str) -> u32 {
    let hay = field.as_bytes();
    let n = finder.needle().len();
    let mut best = 0;
    for pos in finder.find_iter(hay) {
        let starts_word = pos == 0 || hay[pos - 1] == b' ';
        let ends_word = pos + n == hay.len() || hay[pos + n] == b' ';
        let q = match (starts_word, ends_word) {
            (true, true) => 3,
            (true, false) => 2,
            _ => 1,
        };
        best = best.max(q);
        if best == 3 {
            break;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_case_and_diacritics() {
        assert_eq!(normalize("Sigur Rós"), "sigur ros");
        assert_eq!(normalize("  Mötley   Crüe!! "), "motley crue");
        assert_eq!(
            normalize("Ænima — Øresund Straße"),
            "aenima oresund strasse"
        );
        assert_eq!(normalize("砂漠 — Désert 🎵"), "砂漠 desert");
        assert_eq!(normalize("ＡＢＣ"), "abc");
    }

    proptest::proptest! {
        #[test]
        fn ascii_fast_path_agrees(s in "[ -~]{0,40}") {
            proptest::prop_assert_eq!(normalize_ascii(&s), normalize_unicode(&s));
        }
    }

    #[test]
    fn matches_all_tokens_anywhere() {
        let doc = document("Hoppípolla", "Sigur Rós", "Takk...");
        let q = Query::new("sigur hoppipolla");
        assert!(q.score(&doc).is_some());
        assert!(Query::new("sigur zebra").score(&doc).is_none());
        assert!(Query::new("takk").score(&doc).is_some());
    }

    #[test]
    fn ranks_exact_title_over_substring_and_album() {
        let exact = document("Caves", "X", "Y");
        let prefix = document("Caves of Steel", "X", "Y");
        let inner = document("Bigcaves", "X", "Y");
        let album = document("Other", "X", "Caves");
        let q = Query::new("caves");
        let s = |d: &str| q.score(d).unwrap();
        assert!(s(&exact) > s(&prefix), "exact title first");
        assert!(s(&prefix) > s(&album), "title prefix beats album");
        assert!(s(&album) > s(&inner), "whole word in album beats substring");
    }

    #[test]
    fn empty_query_has_no_tokens() {
        assert!(Query::new("  ?! ").is_empty());
    }
}
