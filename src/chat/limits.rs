//! Per-address limits, sans-IO: connections open at once and a message rate per IP address
//! (docs/protocols/chat.md, section 9), so that one client cannot flood the chat.
//!
//! The rate is a token bucket per address, kept as its theoretical arrival time (GCRA): a
//! burst of `burst` messages, then one every `1 / per_second`. A message over the rate is not
//! refused but delayed: [`Limiter::take`] says when it may be handled. One that would wait
//! more than `max_delay` is a flood: the caller drops the connection with `ERROR|429`. Time
//! is passed in, as the time since any fixed origin the caller likes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// The message rate allowed per address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Messages that may come at once (at least 1).
    pub burst: u32,
    /// Messages per second after the burst (at least 1).
    pub per_second: u32,
    /// Longest a message may be delayed; one that would wait longer is a flood.
    pub max_delay: Duration,
}

impl Default for Rate {
    /// IRC servers' usual: a burst of 5, then 2 messages per second, at most 10 s behind.
    fn default() -> Rate {
        Rate { burst: 5, per_second: 2, max_delay: Duration::from_secs(10) }
    }
}

impl Rate {
    fn interval(&self) -> Duration {
        Duration::from_secs(1) / self.per_second.max(1)
    }

    /// How far ahead of the rate a burst may run.
    fn tolerance(&self) -> Duration {
        self.interval() * self.burst.max(1).saturating_sub(1)
    }
}

/// A message that would wait longer than the rate's `max_delay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("messages over the rate for longer than allowed")]
pub struct Flood;

/// One address's rate: when its next message would be due if it kept exactly to the rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    due: Duration,
}

impl Bucket {
    /// A message arriving at `now`: `Ok(at)`, the time it may be handled (`now` when within
    /// the rate, later when over it), and the bucket takes it; or `Err(Flood)` when `at`
    /// would be more than `max_delay` after `now`, and the bucket is left as it was.
    pub fn take(&mut self, rate: &Rate, now: Duration) -> Result<Duration, Flood> {
        let due = self.due.max(now);
        let at = due.saturating_sub(rate.tolerance()).max(now);
        if at - now > rate.max_delay {
            return Err(Flood);
        }
        self.due = due + rate.interval();
        Ok(at)
    }

    /// True when the bucket is full again at `now` (it can be forgotten).
    fn is_idle(&self, now: Duration) -> bool {
        self.due <= now
    }
}

#[derive(Debug, Default)]
struct Address {
    connections: usize,
    bucket: Bucket,
}

/// The limits of every address: connections open and message rate.
#[derive(Debug)]
pub struct Limiter {
    /// Connections one address may have open at once (`None`: no limit).
    max_per_ip: Option<usize>,
    /// `None`: no rate limit.
    rate: Option<Rate>,
    /// Addresses with connections open, or whose bucket is not full yet.
    addresses: HashMap<IpAddr, Address>,
    /// When to next forget idle addresses: once the table has grown to this size.
    sweep_at: usize,
}

/// Addresses kept before the first sweep of idle ones.
const FIRST_SWEEP: usize = 1024;

impl Limiter {
    pub fn new(max_per_ip: Option<usize>, rate: Option<Rate>) -> Limiter {
        Limiter { max_per_ip, rate, addresses: HashMap::new(), sweep_at: FIRST_SWEEP }
    }

    fn tracks(&self) -> bool {
        self.max_per_ip.is_some() || self.rate.is_some()
    }

    /// A connection from `ip` opens at `now`: false (and nothing counted) when `ip` has its
    /// most connections open already.
    pub fn open(&mut self, ip: IpAddr, now: Duration) -> bool {
        if !self.tracks() {
            return true;
        }
        if self.addresses.len() >= self.sweep_at {
            self.addresses.retain(|_, a| a.connections > 0 || !a.bucket.is_idle(now));
            self.sweep_at = (self.addresses.len() * 2).max(FIRST_SWEEP);
        }
        let address = self.addresses.entry(ip).or_default();
        if self.max_per_ip.is_some_and(|max| address.connections >= max) {
            return false;
        }
        address.connections += 1;
        true
    }

    /// A connection from `ip`, counted by [`open`](Self::open), has closed.
    pub fn close(&mut self, ip: IpAddr, now: Duration) {
        if let Some(address) = self.addresses.get_mut(&ip) {
            address.connections = address.connections.saturating_sub(1);
            if address.connections == 0 && address.bucket.is_idle(now) {
                self.addresses.remove(&ip);
            }
        }
    }

    /// A message from `ip` at `now`: when it may be handled (see [`Bucket::take`]); always
    /// `now` without a rate.
    pub fn take(&mut self, ip: IpAddr, now: Duration) -> Result<Duration, Flood> {
        match &self.rate {
            None => Ok(now),
            Some(rate) => self.addresses.entry(ip).or_default().bucket.take(rate, now),
        }
    }

    /// Addresses tracked now.
    pub fn addresses(&self) -> usize {
        self.addresses.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_of_five_then_two_per_second_then_a_flood() {
        let rate = Rate::default();
        let mut b = Bucket::default();
        let start = ms(1000);
        let at: Vec<Duration> = (0..25).map(|_| b.take(&rate, start).unwrap()).collect();
        assert_eq!(&at[..5], &[start; 5]);
        assert_eq!(at[5], start + ms(500));
        assert_eq!(at[24], start + ms(10_000));
        assert_eq!(b.take(&rate, start), Err(Flood));
        // Time passing pays the debt back: 10 s later it is half a second behind still, and
        // once the debt is paid a burst may come again.
        assert_eq!(b.take(&rate, start + ms(10_000)), Ok(start + ms(10_500)));
        let later = start + ms(20_000);
        assert_eq!((0..5).map(|_| b.take(&rate, later).unwrap()).collect::<Vec<_>>(), [later; 5]);
    }

    #[test]
    fn connections_per_address_and_addresses_apart() {
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let mut l = Limiter::new(Some(2), Some(Rate { burst: 1, ..Rate::default() }));
        assert!(l.open(a, ms(0)) && l.open(a, ms(0)));
        assert!(!l.open(a, ms(0)));
        assert!(l.open(b, ms(0)));
        assert_eq!(l.take(a, ms(0)), Ok(ms(0)));
        assert_eq!(l.take(a, ms(0)), Ok(ms(500)));
        assert_eq!(l.take(b, ms(0)), Ok(ms(0)), "another address has its own bucket");
        l.close(a, ms(0));
        assert!(l.open(a, ms(0)));
        l.close(b, ms(0));
        assert_eq!(l.addresses(), 2, "an address in debt is remembered, even without connections");
        assert!(l.open(b, ms(0)));
        l.close(b, ms(1000));
        assert_eq!(l.addresses(), 1, "an idle address without connections is forgotten");
        let mut free = Limiter::new(None, None);
        assert!((0..100).all(|_| free.open(a, ms(0))));
        assert_eq!(free.take(a, ms(5)), Ok(ms(5)));
        assert_eq!(free.addresses(), 0);
    }

    proptest! {
        /// Whatever the arrivals: a message is never handled before it arrives nor more than
        /// `max_delay` after, messages are handled in order, and in any window of time no
        /// more are handled than the burst plus the rate allows.
        #[test]
        fn the_bucket_keeps_to_the_rate(
            burst in 1u32..8,
            per_second in 1u32..50,
            max_delay in 0u64..3000,
            gaps in proptest::collection::vec(0u64..400, 1..200),
        ) {
            let rate = Rate { burst, per_second, max_delay: ms(max_delay) };
            let mut b = Bucket::default();
            let mut now = Duration::ZERO;
            let mut handled = Vec::new();
            for gap in gaps {
                now += ms(gap);
                let before = b;
                match b.take(&rate, now) {
                    Ok(at) => {
                        prop_assert!(at >= now && at - now <= rate.max_delay);
                        prop_assert!(handled.last().is_none_or(|last| *last <= at));
                        handled.push(at);
                    }
                    Err(Flood) => prop_assert_eq!(b, before),
                }
            }
            let interval = rate.interval();
            for (i, start) in handled.iter().enumerate() {
                for (j, end) in handled.iter().enumerate().skip(i) {
                    let window = *end - *start;
                    let allowed = u64::from(burst) + (window.as_nanos() / interval.as_nanos()) as u64;
                    prop_assert!((j - i + 1) as u64 <= allowed, "{} messages in {:?}", j - i + 1, window);
                }
            }
        }
    }
}
