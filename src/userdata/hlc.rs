//! Hybrid logical clocks: wall-clock milliseconds with a counter, so that
//! every operation a device makes is stamped later than everything it has
//! seen, even when its clock is behind a member's. Pure: the wall time is
//! passed in.

use std::fmt;

/// A hybrid logical clock time: milliseconds since the Unix epoch in the
/// high 48 bits, a counter in the low 16. Ordered as a plain integer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc(pub u64);

const COUNTER_BITS: u32 = 16;

impl Hlc {
    /// The time `ms` with counter `counter`.
    pub fn new(ms: u64, counter: u16) -> Hlc {
        Hlc((ms << COUNTER_BITS) | u64::from(counter))
    }

    /// Its wall-clock part, in ms since the Unix epoch.
    pub fn ms(self) -> u64 {
        self.0 >> COUNTER_BITS
    }

    fn counter(self) -> u16 {
        (self.0 & 0xffff) as u16
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.ms(), self.counter())
    }
}

/// One device's clock: the last time it handed out or saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    last: Hlc,
}

impl Clock {
    /// A time later than every time handed out or seen so far, and no
    /// earlier than `wall_ms` (the wall clock).
    pub fn tick(&mut self, wall_ms: u64) -> Hlc {
        let next = if wall_ms > self.last.ms() {
            Hlc::new(wall_ms, 0)
        } else if self.last.counter() < u16::MAX {
            Hlc(self.last.0 + 1)
        } else {
            // 65536 operations in one millisecond: borrow the next one.
            Hlc::new(self.last.ms() + 1, 0)
        };
        self.last = next;
        next
    }

    /// Note a time seen in a member's operation, so the next tick is later.
    pub fn observe(&mut self, seen: Hlc) {
        self.last = self.last.max(seen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_grow_even_when_the_wall_clock_goes_back() {
        let mut c = Clock::default();
        let a = c.tick(1000);
        let b = c.tick(1000);
        let d = c.tick(900); // the clock was set back
        assert!(a < b && b < d);
        assert_eq!(a.ms(), 1000);
        assert_eq!(d.ms(), 1000);
        let e = c.tick(2000);
        assert_eq!(e, Hlc::new(2000, 0));
    }

    #[test]
    fn a_seen_time_from_the_future_is_passed() {
        let mut c = Clock::default();
        c.observe(Hlc::new(5000, 7));
        let t = c.tick(1000);
        assert!(t > Hlc::new(5000, 7));
        assert_eq!(t.ms(), 5000);
    }

    #[test]
    fn the_counter_overflows_into_the_next_millisecond() {
        let mut c = Clock::default();
        c.observe(Hlc::new(10, u16::MAX));
        assert_eq!(c.tick(10), Hlc::new(11, 0));
    }
}
