//! Opus bitrates as a type: a [`Kbps`] is always within
//! [`MIN_KBPS`]..=[`MAX_KBPS`], so nothing past its parser checks a range.
//! Pure: no I/O.

use super::{MAX_KBPS, MIN_KBPS};
use std::fmt;
use std::str::FromStr;

/// An Opus target bitrate in kb/s (VBR), within
/// [`MIN_KBPS`]..=[`MAX_KBPS`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Kbps(u32);

/// Why a bitrate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KbpsError {
    /// Not a whole number of kb/s.
    #[error("{0:?} is not a bitrate in kb/s")]
    NotANumber(String),
    /// A number outside what the encoder is offered.
    #[error("bitrate {0} kb/s is outside {MIN_KBPS}..={MAX_KBPS}")]
    OutOfRange(u32),
}

impl Kbps {
    /// What a listener gets when it names no bitrate: 128 kb/s.
    pub const DEFAULT: Kbps = Kbps(128);

    /// `kbps` if it is within range.
    pub fn new(kbps: u32) -> Result<Kbps, KbpsError> {
        if (MIN_KBPS..=MAX_KBPS).contains(&kbps) {
            Ok(Kbps(kbps))
        } else {
            Err(KbpsError::OutOfRange(kbps))
        }
    }

    /// The nearest bitrate in range (for a peer's request, which is served
    /// as well as it can be rather than refused).
    pub fn clamped(kbps: u32) -> Kbps {
        Kbps(kbps.clamp(MIN_KBPS, MAX_KBPS))
    }

    /// The value in kb/s.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// `128` or `128k`.
impl FromStr for Kbps {
    type Err = KbpsError;

    fn from_str(s: &str) -> Result<Kbps, KbpsError> {
        let digits = s.strip_suffix('k').unwrap_or(s);
        let n = digits
            .parse::<u32>()
            .map_err(|_| KbpsError::NotANumber(s.to_owned()))?;
        Kbps::new(n)
    }
}

/// The number alone, as [`FromStr`] reads it back.
impl fmt::Display for Kbps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_in_range_with_an_optional_k() {
        assert_eq!("128".parse(), Ok(Kbps(128)));
        assert_eq!("96k".parse(), Ok(Kbps(96)));
        assert_eq!("16".parse(), Ok(Kbps(MIN_KBPS)));
        assert_eq!("256".parse(), Ok(Kbps(MAX_KBPS)));
        assert_eq!("15".parse::<Kbps>(), Err(KbpsError::OutOfRange(15)));
        assert_eq!("257k".parse::<Kbps>(), Err(KbpsError::OutOfRange(257)));
        for bad in ["", "k", "12kk", "-1", "1.5", " 128", "128kbps", "original"] {
            assert_eq!(
                bad.parse::<Kbps>(),
                Err(KbpsError::NotANumber(bad.into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn display_round_trips_and_clamping_stays_in_range() {
        for k in [MIN_KBPS, 96, 128, MAX_KBPS] {
            let b = Kbps::new(k).unwrap();
            assert_eq!(b.to_string().parse(), Ok(b));
        }
        assert_eq!(Kbps::clamped(0).get(), MIN_KBPS);
        assert_eq!(Kbps::clamped(10_000).get(), MAX_KBPS);
        assert_eq!(Kbps::clamped(100).get(), 100);
        assert_eq!(Kbps::DEFAULT.get(), 128);
    }
}
