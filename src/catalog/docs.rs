//! Search documents of one kind (tracks, albums or artists) in one
//! contiguous buffer, so a query is one SIMD substring scan over all of
//! them rather than a call per document.
//!
//! Removals leave holes that are squeezed out once they outnumber the live
//! documents, so updates stay cheap and the buffer stays within twice its
//! live size. Pure: no locks, no I/O.

use crate::index::search::{Query, SEP};
use std::collections::HashMap;
use std::hash::Hash;

/// Ends every document in the buffer; never occurs inside one (folded
/// text has no control characters but [`SEP`]).
const END: u8 = b'\n';

/// Folded documents keyed by `K`.
pub struct Docs<K> {
    buf: Vec<u8>,
    /// Start of each document in `buf`, in buffer order.
    starts: Vec<u32>,
    /// The key of each document; `None` for a removed one.
    keys: Vec<Option<K>>,
    /// Slot of each live key.
    slot: HashMap<K, u32>,
    dead: usize,
}

impl<K: Copy + Eq + Hash> Default for Docs<K> {
    fn default() -> Self {
        Docs {
            buf: Vec::new(),
            starts: Vec::new(),
            keys: Vec::new(),
            slot: HashMap::new(),
            dead: 0,
        }
    }
}

impl<K: Copy + Eq + Hash> Docs<K> {
    /// Set the document of `key` (replacing any earlier one).
    pub fn put(&mut self, key: K, doc: &str) {
        self.remove(&key);
        let at = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.starts.push(at);
        self.keys.push(Some(key));
        self.slot.insert(key, (self.keys.len() - 1) as u32);
        self.buf
            .extend(doc.bytes().map(|b| if b == END { b' ' } else { b }));
        self.buf.push(END);
    }

    /// Forget the document of `key`.
    pub fn remove(&mut self, key: &K) {
        if let Some(s) = self.slot.remove(key) {
            self.keys[s as usize] = None;
            self.dead += 1;
            if self.dead > 64 && self.dead > self.slot.len() {
                self.compact();
            }
        }
    }

    /// Give back spare capacity (after a batch of changes settled).
    pub fn shrink(&mut self) {
        self.buf.shrink_to_fit();
        self.starts.shrink_to_fit();
        self.keys.shrink_to_fit();
        self.slot.shrink_to_fit();
    }

    /// Live documents.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slot.len()
    }

    fn doc(&self, i: usize) -> &[u8] {
        let start = self.starts[i] as usize;
        let end = self
            .starts
            .get(i + 1)
            .map_or(self.buf.len(), |&e| e as usize);
        &self.buf[start..end - 1]
    }

    fn compact(&mut self) {
        let mut fresh = Docs::default();
        for i in 0..self.keys.len() {
            if let Some(k) = self.keys[i] {
                let d = std::str::from_utf8(self.doc(i)).unwrap_or("").to_string();
                fresh.put(k, &d);
            }
        }
        *self = fresh;
    }

    /// Every live document matching every token of `q`, with its score.
    /// The first token's occurrences are found by one scan of the buffer;
    /// only the documents holding one are scored.
    pub fn matches(&self, q: &Query) -> Vec<(K, u32)> {
        let Some(first) = q.tokens.first() else {
            return vec![];
        };
        let finder = memchr::memmem::Finder::new(first.as_bytes());
        let mut out = vec![];
        let (mut at, mut i) = (0usize, 0usize);
        while let Some(hit) = finder.find(&self.buf[at..]) {
            let pos = at + hit;
            // The document holding this occurrence: hits come in buffer
            // order, and a broad query's are a few documents apart, so a
            // short walk forward beats a binary search over them all.
            let next = |i: usize| self.starts.get(i + 1).is_some_and(|&s| s as usize <= pos);
            let mut steps = 0;
            while steps < 16 && next(i) {
                i += 1;
                steps += 1;
            }
            if next(i) {
                i += self.starts[i..].partition_point(|&s| s as usize <= pos) - 1;
            }
            let end = self
                .starts
                .get(i + 1)
                .map_or(self.buf.len(), |&e| e as usize);
            if let Some(k) = self.keys[i] {
                if let Some(s) = q.score_bytes(self.doc(i)) {
                    out.push((k, s));
                }
            }
            at = end;
        }
        out
    }
}

/// A search document for a name alone (albums, artists): the name in the
/// first field, so a match ranks like a title match.
pub fn name_doc(folded: &str) -> String {
    let mut d = folded.to_string();
    d.push(SEP);
    d.push(SEP);
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::search::document;

    #[test]
    fn finds_every_matching_document_once() {
        let mut d: Docs<u32> = Docs::default();
        d.put(1, &document("Hoppípolla", "Sigur Rós", "Takk"));
        d.put(2, &document("Glósóli", "Sigur Rós", "Takk"));
        d.put(3, &document("Roses", "Someone", "Other"));
        let q = Query::new("sigur ros");
        let mut got: Vec<u32> = d.matches(&q).into_iter().map(|(k, _)| k).collect();
        got.sort();
        assert_eq!(got, vec![1, 2]);
        // A token occurring twice in one document yields it once.
        d.put(4, &document("takk takk", "x", "takk"));
        let got: Vec<u32> = d
            .matches(&Query::new("takk"))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(got.iter().filter(|&&k| k == 4).count(), 1);
    }

    #[test]
    fn removed_and_replaced_documents_stop_matching() {
        let mut d: Docs<u32> = Docs::default();
        for i in 0..500 {
            d.put(i, &document(&format!("song {i}"), "band", "album"));
        }
        for i in 0..400 {
            d.remove(&i);
        }
        d.put(450, &document("renamed", "band", "album"));
        assert_eq!(d.len(), 100);
        let got = d.matches(&Query::new("song"));
        assert_eq!(got.len(), 99);
        assert!(got.iter().all(|(k, _)| *k >= 400 && *k != 450));
        assert_eq!(d.matches(&Query::new("renamed")).len(), 1);
        // Compaction kept the buffer near the live size.
        assert!(d.buf.len() < 100 * 40, "{} bytes", d.buf.len());
    }
}
