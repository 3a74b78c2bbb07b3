//! Fractional positions for playlist entries: byte strings ordered as
//! base-256 fractions (`[128]` is one half), so that a position can always
//! be made between any two others without renumbering anything. Two
//! devices may make the same position concurrently; entries then order by
//! their ids. Pure.

use std::fmt;

/// Longest position accepted from a member: appends grow a position by one
/// byte per 127, so this is tens of thousands of edits at one spot.
pub const MAX_LEN: usize = 512;

/// A position: never empty, never ending in a zero byte (so there is
/// always room before it), compared byte by byte.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(Vec<u8>);

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Position({})", data_encoding::HEXLOWER.encode(&self.0))
    }
}

impl Position {
    /// Check bytes received from a member.
    pub fn from_bytes(b: Vec<u8>) -> Option<Position> {
        let ok = !b.is_empty() && b.len() <= MAX_LEN && b.last() != Some(&0);
        ok.then_some(Position(b))
    }

    /// The bytes, as sent and stored.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A position strictly between `lo` and `hi` (`None`: the start or the
    /// end of the list). `lo` must be below `hi`; if it is not, the result
    /// is after `lo`.
    pub fn between(lo: Option<&Position>, hi: Option<&Position>) -> Position {
        let hi = match (lo, hi) {
            (Some(l), Some(h)) if l >= h => None,
            _ => hi,
        };
        match (lo, hi) {
            (Some(l), None) => Position::after(l),
            _ => Position::midpoint(lo.map_or(&[][..], |p| &p.0), hi.map(|p| &p.0[..])),
        }
    }

    /// After `lo`: one step up in the first digit that has room, so a
    /// playlist grows by one byte per 127 appends, not per 8.
    fn after(lo: &Position) -> Position {
        match lo.0.iter().position(|&d| d < u8::MAX) {
            Some(i) => {
                let mut out = lo.0[..i].to_vec();
                out.push(lo.0[i] + 1);
                Position(out)
            }
            None => {
                let mut out = lo.0.clone();
                out.push(128);
                Position(out)
            }
        }
    }

    /// Digit by digit: equal digits are copied; where the bounds differ by
    /// two or more the middle digit ends it; where they differ by one the
    /// low digit is copied and the upper bound lifts (anything that follows
    /// is below it).
    fn midpoint(lo: &[u8], mut hi: Option<&[u8]>) -> Position {
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            let a = u32::from(lo.get(i).copied().unwrap_or(0));
            let b = hi.map_or(256, |h| u32::from(h.get(i).copied().unwrap_or(0)));
            if b > a + 1 {
                out.push(((a + b) / 2) as u8);
                return Position(out);
            }
            out.push(a as u8);
            if b == a + 1 {
                hi = None;
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(b: &[u8]) -> Position {
        Position::from_bytes(b.to_vec()).unwrap()
    }

    #[test]
    fn appends_and_prepends() {
        let first = Position::between(None, None);
        assert_eq!(first, p(&[128]));
        let mut last = first.clone();
        for _ in 0..1000 {
            let next = Position::between(Some(&last), None);
            assert!(next > last);
            last = next;
        }
        assert!(last.as_bytes().len() <= 10, "{last:?}");
        let before = Position::between(None, Some(&first));
        assert!(before < first);
        assert_eq!(
            Position::between(Some(&p(&[4, 200])), Some(&p(&[5]))),
            p(&[4, 228])
        );
        assert_eq!(
            Position::between(Some(&p(&[4])), Some(&p(&[4, 1]))),
            p(&[4, 0, 128])
        );
    }

    #[test]
    fn bad_bytes_are_refused() {
        assert!(Position::from_bytes(vec![]).is_none());
        assert!(Position::from_bytes(vec![3, 0]).is_none());
        assert!(Position::from_bytes(vec![1; MAX_LEN + 1]).is_none());
    }

    fn position() -> impl Strategy<Value = Position> {
        proptest::collection::vec(any::<u8>(), 1..6).prop_map(|mut v| {
            if *v.last().unwrap() == 0 {
                *v.last_mut().unwrap() = 1;
            }
            Position(v)
        })
    }

    proptest! {
        #[test]
        fn between_is_strictly_between(a in position(), b in position()) {
            let (lo, hi) = if a < b { (a, b) } else { (b, a) };
            let m = Position::between(Some(&lo), Some(&hi));
            prop_assert!(Position::from_bytes(m.0.clone()).is_some());
            if lo < hi {
                prop_assert!(lo < m && m < hi, "{lo:?} {m:?} {hi:?}");
            }
            let before = Position::between(None, Some(&lo));
            prop_assert!(before < lo && Position::from_bytes(before.0.clone()).is_some());
            let after = Position::between(Some(&hi), None);
            prop_assert!(after > hi);
        }
    }
}
