//! [`Rng`]: a small seedable random number generator, so that tests and their faults can be
//! replayed from a seed without a crate for it.

use std::ops::Range;
use std::time::Duration;

/// A small, fast, seedable random number generator (xorshift64*): the same seed gives the same
/// numbers. Not for cryptography.
///
/// ```
/// use es_test_support::Rng;
///
/// let mut rng = Rng::new(7);
/// let n = rng.range(10..20);
/// assert!((10..20).contains(&n));
/// assert_eq!(Rng::new(7).range(10..20), n);
/// ```
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `range`; `range.start` when the range is empty.
    pub fn range(&mut self, range: Range<u64>) -> u64 {
        let width = range.end.saturating_sub(range.start);
        if width == 0 {
            return range.start;
        }
        range.start + self.next_u64() % width
    }

    /// True with probability `p` (0 or less: never; 1 or more: always).
    pub fn chance(&mut self, p: f64) -> bool {
        // 53 bits make a uniform f64 in [0, 1).
        p > 0.0 && ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// A duration in `range`, to the microsecond; `range.start` when the range is empty.
    pub fn duration(&mut self, range: Range<Duration>) -> Duration {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(self.range(micros(range.start)..micros(range.end)))
    }
}
