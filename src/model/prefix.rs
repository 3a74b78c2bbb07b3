//! Short track ids: a hex prefix checked once where it enters, resolved
//! the same way everywhere (the catalog, the index, the CLI offline).
//! Pure.

use super::TrackId;
use std::str::FromStr;

/// Fewest hex digits a short id may have (as `git` asks for at least 4).
/// The same everywhere: the CLI offline, a running node, the HTTP API.
pub const MIN_PREFIX: usize = 4;

/// Why an id or id prefix names nothing, or more than one thing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not hex, too short or too long.
    #[error("{0:?} is not an id (at least {MIN_PREFIX} hex digits)")]
    NotAnId(String),
    /// Nothing starts with it.
    #[error("no track {0} in the library")]
    NotFound(String),
    /// Several things start with it.
    #[error("{count} tracks start with {prefix}; give more digits")]
    Ambiguous {
        /// The prefix as given.
        prefix: String,
        /// How many ids start with it (at least 2).
        count: usize,
    },
}

/// A hex prefix of a track id, checked: at least [`MIN_PREFIX`] digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    hex: String,
}

impl FromStr for Prefix {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Prefix, IdError> {
        let hex = s.trim().to_ascii_lowercase();
        if hex.len() < MIN_PREFIX || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(IdError::NotAnId(s.trim().to_string()));
        }
        Ok(Prefix { hex })
    }
}

impl Prefix {
    /// The digits, lowercase.
    pub fn as_str(&self) -> &str {
        &self.hex
    }

    /// The whole id, when all 64 digits are given.
    pub fn whole(&self) -> Option<TrackId> {
        self.hex.parse().ok()
    }

    /// The smallest and largest ids with this prefix (inclusive): a range
    /// query over any id-ordered map finds every match.
    pub fn bounds(&self) -> (TrackId, TrackId) {
        let mut lo = [0u8; 32];
        let mut hi = [0xffu8; 32];
        for (i, c) in self.hex.bytes().enumerate() {
            let v = (c as char).to_digit(16).unwrap_or(0) as u8;
            let (b, shift) = (i / 2, if i % 2 == 0 { 4 } else { 0 });
            let mask = 0x0f << shift;
            lo[b] = (lo[b] & !mask) | (v << shift);
            hi[b] = (hi[b] & !mask) | (v << shift);
        }
        (TrackId::from_bytes(lo), TrackId::from_bytes(hi))
    }

    /// The one id among `matches` (the ids within [`Prefix::bounds`]).
    pub fn pick(&self, mut matches: impl Iterator<Item = TrackId>) -> Result<TrackId, IdError> {
        let first = matches
            .next()
            .ok_or_else(|| IdError::NotFound(self.hex.clone()))?;
        match matches.count() {
            0 => Ok(first),
            more => Err(IdError::Ambiguous {
                prefix: self.hex.clone(),
                count: more + 1,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn id(hex_start: &str) -> TrackId {
        let mut s = hex_start.to_string();
        while s.len() < 64 {
            s.push('0');
        }
        s.parse().unwrap()
    }

    #[test]
    fn prefix_needs_four_hex_digits() {
        assert!("5d".parse::<Prefix>().is_err());
        assert!("5d2x".parse::<Prefix>().is_err());
        assert!(" 5D2A ".parse::<Prefix>().is_ok());
        assert!("a".repeat(65).parse::<Prefix>().is_err());
    }

    #[test]
    fn bounds_cover_exactly_the_ids_with_the_prefix() {
        let ids: BTreeSet<TrackId> = ["5d2a", "5d2b", "5d2a9", "5d3", "5d29f"]
            .iter()
            .map(|h| id(h))
            .collect();
        for (p, want) in [
            ("5d2a", 2),
            ("5d2b", 1),
            ("5d2a9", 1),
            ("5d29", 1),
            ("ffff", 0),
        ] {
            let p: Prefix = p.parse().unwrap();
            let (lo, hi) = p.bounds();
            let got: Vec<TrackId> = ids.range(lo..=hi).copied().collect();
            assert_eq!(got.len(), want, "prefix {}", p.as_str());
            assert!(got.iter().all(|i| i.to_hex().starts_with(p.as_str())));
        }
    }

    #[test]
    fn pick_one_none_or_ambiguous() {
        let p: Prefix = "5d2a".parse().unwrap();
        assert_eq!(p.pick([id("5d2a")].into_iter()), Ok(id("5d2a")));
        assert!(matches!(
            p.pick(std::iter::empty()),
            Err(IdError::NotFound(_))
        ));
        assert!(matches!(
            p.pick([id("5d2a"), id("5d2a1")].into_iter()),
            Err(IdError::Ambiguous { count: 2, .. })
        ));
    }
}
