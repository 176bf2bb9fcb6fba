//! Per-client request rate limiting: a token bucket per client address.
//!
//! Each address may send `per_minute` webhook requests a minute on average, in bursts of up to
//! `per_minute`. A request over the limit gets 429 with `Retry-After` (whole seconds until a
//! token is back). Invariant: the table of buckets never grows past [`MAX_CLIENTS`]; when full,
//! buckets that have refilled completely (idle clients) are dropped first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Most client addresses tracked at once.
pub const MAX_CLIENTS: usize = 10_000;

#[derive(Debug)]
pub struct RateLimiter {
    per_minute: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// A limiter; `per_minute` 0 lets everything through.
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute: per_minute as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `client` at `now`, or returns the seconds until one is available.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), u64> {
        if self.per_minute == 0.0 {
            return Ok(());
        }
        let per_sec = self.per_minute / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&client) {
            let full = self.per_minute;
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * per_sec < full
            });
            if buckets.len() >= MAX_CLIENTS {
                // Every tracked client is busy: forget the one seen longest ago.
                if let Some(oldest) = buckets
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(ip, _)| *ip)
                {
                    buckets.remove(&oldest);
                }
            }
        }
        let (tokens, at) = buckets.entry(client).or_insert((self.per_minute, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_sec).min(self.per_minute);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / per_sec).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_up_to_the_limit_then_refills() {
        let limiter = RateLimiter::new(3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check(a, t0), Ok(()));
        }
        assert_eq!(
            limiter.check(a, t0),
            Err(20),
            "3 a minute: one token every 20 s"
        );
        assert_eq!(
            limiter.check(b, t0),
            Ok(()),
            "other clients are not affected"
        );
        assert_eq!(limiter.check(a, t0 + Duration::from_secs(20)), Ok(()));
        assert!(RateLimiter::new(0).check(a, t0).is_ok());
    }

    #[test]
    fn the_table_stays_bounded() {
        let limiter = RateLimiter::new(60);
        let t0 = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 + 50) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(i));
            limiter.check(ip, t0).unwrap();
        }
        assert!(limiter.buckets.lock().unwrap().len() <= MAX_CLIENTS);
    }
}
