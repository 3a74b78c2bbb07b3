//! HTTP byte ranges (RFC 9110 §14): what a `Range` header asks of a body
//! of known length. Pure.
//!
//! One range per request: `bytes=A-B`, `bytes=A-` and the suffix form
//! `bytes=-N` (the last N bytes). A range the server may ignore (another
//! unit, several ranges, bad syntax) is ignored: the whole body, 200. A
//! range that cannot be served (inverted, starting at or past the end, an
//! empty suffix) is a 416 with `Content-Range: bytes */LEN`.

/// The answer to a `Range` header for a body of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Serve the whole body (no range, or one to ignore).
    Whole,
    /// Serve bytes `first..=last` (206).
    Part {
        /// Offset of the first byte to serve.
        first: u64,
        /// Offset of the last byte to serve (inclusive), clamped to the
        /// body's last byte.
        last: u64,
    },
    /// 416 Range Not Satisfiable.
    Unsatisfiable,
}

impl Answer {
    /// The number of bytes a `Part` holds.
    pub fn part_len(&self) -> Option<u64> {
        match *self {
            Answer::Part { first, last } => Some(last - first + 1),
            _ => None,
        }
    }
}

/// What the header asks, before the length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spec {
    /// `bytes=A-` or `bytes=A-B`.
    From {
        /// `A`: offset of the first byte asked for.
        first: u64,
        /// `B`: offset of the last byte asked for (inclusive, possibly past
        /// the end); `None` for "to the end".
        last: Option<u64>,
    },
    /// `bytes=-N`.
    Suffix(u64),
}

/// Parse a `Range` header value; `None` for anything to ignore.
pub fn parse(value: &str) -> Option<Spec> {
    let spec = value.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    match (a.is_empty(), b.is_empty()) {
        (true, false) if digits(b) => Some(Spec::Suffix(b.parse().ok()?)),
        (false, true) if digits(a) => Some(Spec::From {
            first: a.parse().ok()?,
            last: None,
        }),
        (false, false) if digits(a) && digits(b) => Some(Spec::From {
            first: a.parse().ok()?,
            last: Some(b.parse().ok()?),
        }),
        _ => None,
    }
}

/// Resolve a spec against a body of `len` bytes.
pub fn resolve(spec: Option<Spec>, len: u64) -> Answer {
    match spec {
        None => Answer::Whole,
        Some(Spec::From { first, last }) => {
            if last.is_some_and(|l| l < first) || first >= len {
                return Answer::Unsatisfiable;
            }
            let last = last.map_or(len - 1, |l| l.min(len - 1));
            Answer::Part { first, last }
        }
        Some(Spec::Suffix(0)) => Answer::Unsatisfiable,
        Some(Spec::Suffix(_)) if len == 0 => Answer::Unsatisfiable,
        Some(Spec::Suffix(n)) => Answer::Part {
            first: len.saturating_sub(n),
            last: len - 1,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(h: &str, len: u64) -> Answer {
        resolve(parse(h), len)
    }

    #[test]
    fn ordinary_ranges() {
        assert_eq!(
            answer("bytes=0-99", 1000),
            Answer::Part { first: 0, last: 99 }
        );
        assert_eq!(
            answer("bytes=500-", 1000),
            Answer::Part {
                first: 500,
                last: 999
            }
        );
        // A last position past the end is cut to the end.
        assert_eq!(
            answer("bytes=900-5000", 1000),
            Answer::Part {
                first: 900,
                last: 999
            }
        );
        assert_eq!(
            answer("bytes=999-999", 1000),
            Answer::Part {
                first: 999,
                last: 999
            }
        );
        assert_eq!(answer("bytes=0-0", 1000).part_len(), Some(1));
    }

    #[test]
    fn suffix_ranges_are_the_last_bytes() {
        assert_eq!(
            answer("bytes=-500", 1000),
            Answer::Part {
                first: 500,
                last: 999
            }
        );
        // Longer than the body: all of it, still a 206.
        assert_eq!(
            answer("bytes=-5000", 1000),
            Answer::Part {
                first: 0,
                last: 999
            }
        );
        assert_eq!(answer("bytes=-0", 1000), Answer::Unsatisfiable);
        assert_eq!(answer("bytes=-1", 0), Answer::Unsatisfiable);
    }

    #[test]
    fn inverted_and_past_the_end_are_416() {
        // The underflow the fuzz run found: 500-100 once gave 2^64 - 399 bytes.
        assert_eq!(answer("bytes=500-100", 1000), Answer::Unsatisfiable);
        assert_eq!(answer("bytes=1000-", 1000), Answer::Unsatisfiable);
        assert_eq!(answer("bytes=5000-6000", 1000), Answer::Unsatisfiable);
        assert_eq!(answer("bytes=0-", 0), Answer::Unsatisfiable);
    }

    #[test]
    fn what_may_be_ignored_is_ignored() {
        for h in [
            "items=0-10",
            "bytes=0-10,20-30",
            "bytes=abc-",
            "bytes=-",
            "bytes=1-x",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
            "",
        ] {
            assert_eq!(answer(h, 1000), Answer::Whole, "{h:?}");
        }
    }
}
