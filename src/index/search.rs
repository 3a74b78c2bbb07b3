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
        self.score_bytes(doc.as_bytes())
    }

    /// [`Query::score`] of a document as bytes (the catalog's documents
    /// sit in one buffer; no need to check them for UTF-8 again).
    pub fn score_bytes(&self, bytes: &[u8]) -> Option<u32> {
        const FIELD_WEIGHT: [u32; 3] = [6, 4, 3];
        let len = bytes.len();
        // The fields' bounds, from one pass for the separators: each token
        // is then found once over the whole document (an occurrence never
        // spans a separator, which no token holds), not once per field.
        let mut seps = memchr::memchr_iter(SEP as u8, bytes);
        let mut ends = [len; 3];
        for e in &mut ends {
            *e = seps.next().unwrap_or(len);
        }
        let starts = [0, (ends[0] + 1).min(len), (ends[1] + 1).min(len)];
        let mut total = 0;
        for finder in &self.finders {
            let n = finder.needle().len();
            let mut best = 0;
            for pos in finder.find_iter(bytes) {
                let f = if pos < ends[0] {
                    0
                } else if pos < ends[1] {
                    1
                } else if pos < ends[2] {
                    2
                } else {
                    break;
                };
                let starts_word = pos == starts[f] || bytes[pos - 1] == b' ';
                let ends_word = pos + n == ends[f] || bytes[pos + n] == b' ';
                let q = match (starts_word, ends_word) {
                    (true, true) => 3,
                    (true, false) => 2,
                    _ => 1,
                };
                best = best.max(q * FIELD_WEIGHT[f]);
                if best == 3 * FIELD_WEIGHT[0] {
                    break;
                }
            }
            if best == 0 {
                return None;
            }
            total += best;
        }
        for (f, bonus) in [60, 30, 15].into_iter().enumerate() {
            let field = &bytes[starts[f]..ends[f].max(starts[f])];
            if field == self.whole.as_bytes() {
                total += bonus;
            } else if field.starts_with(self.whole.as_bytes()) {
                total += bonus / 3;
            }
        }
        Some(total)
    }
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
