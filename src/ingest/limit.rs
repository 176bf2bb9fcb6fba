//! The per-address budget of refused requests, and the layer that enforces it.
//!
//! Only refusals are counted: a request answered with a 4xx (401, 403, 404, 405, 408, 413,
//! ...) that did not prove a credential. Each address may be refused `per_minute` times a
//! minute on average, in bursts of up to `per_minute`. An address whose budget is spent gets 429
//! with `Retry-After` for every request that carries no valid token, before its body is read,
//! its signature computed or anything parsed: a flood of refusals costs a map lookup per
//! request. Authenticated deliveries are never counted and never refused here, even from an
//! address that is over its budget (an attacker behind the same NAT as iClosed must not block
//! iClosed); they are bounded by the buffer instead (503 with `Retry-After`). Over the budget,
//! a request can only prove itself by a credential checked before its body: a webhook token or
//! the admin token. An HMAC signature needs the whole body, so a request signed but carrying no
//! token gets the 429 like any other.
//!
//! Requests in flight are checked before any of them is refused, so a burst may overshoot the
//! budget by the number of requests open at once (`max_connections` at most); the balance then
//! goes below zero, down to minus one budget, and the address waits that much longer.
//!
//! Invariant: the table of budgets never grows past [`MAX_CLIENTS`]; when full, addresses whose
//! budget has refilled completely (idle ones) are dropped first. Only a refusal adds an address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, auth};

/// Most client addresses tracked at once.
pub const MAX_CLIENTS: usize = 10_000;

/// A response extension saying the request proved a credential (a token, a signature, or no
/// secret being configured): its 4xx is not a refusal of an unknown client and is not counted.
#[derive(Debug, Clone, Copy)]
pub struct Authenticated;

/// How many refusals each client address has left: a token bucket per address.
#[derive(Debug)]
pub struct RefusalBudget {
    /// Refusals allowed a minute, and the size of a burst; 0 turns the budget off.
    per_minute: f64,
    /// Per address: refusals left (below zero after an overshoot) and when that was computed.
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RefusalBudget {
    /// A budget of `per_minute` refusals a minute per address; 0 never refuses anyone.
    pub fn new(per_minute: u32) -> RefusalBudget {
        RefusalBudget {
            per_minute: per_minute as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn per_sec(&self) -> f64 {
        self.per_minute / 60.0
    }

    /// The balance of `(left, at)` refilled up to `now`.
    fn refilled(&self, (left, at): (f64, Instant), now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(at).as_secs_f64();
        (left + elapsed * self.per_sec()).min(self.per_minute)
    }

    /// `Ok` when `client` may still be refused at `now`, else the whole seconds until it may
    /// (at least 1). Takes nothing: only [`RefusalBudget::charge`] does.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), u64> {
        if self.per_minute == 0.0 {
            return Ok(());
        }
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(bucket) = buckets.get(&client) else {
            return Ok(());
        };
        let left = self.refilled(*bucket, now);
        if left >= 1.0 {
            Ok(())
        } else {
            Err(((1.0 - left) / self.per_sec()).ceil().max(1.0) as u64)
        }
    }

    /// Counts one refusal of `client` at `now`. The balance may go below zero (requests that
    /// were checked together and refused after), down to minus one budget.
    pub fn charge(&self, client: IpAddr, now: Instant) {
        if self.per_minute == 0.0 {
            return;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&client) {
            buckets.retain(|_, bucket| self.refilled(*bucket, now) < self.per_minute);
            if buckets.len() >= MAX_CLIENTS {
                // Every tracked address is still paying: forget the one refused longest ago.
                if let Some(oldest) = buckets
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(ip, _)| *ip)
                {
                    buckets.remove(&oldest);
                }
            }
        }
        let bucket = buckets.entry(client).or_insert((self.per_minute, now));
        *bucket = (
            (self.refilled(*bucket, now) - 1.0).max(-self.per_minute),
            now,
        );
    }
}

/// The address a request came from: the peer, or the last `X-Forwarded-For` entry when the
/// proxy in front is trusted (the address that proxy saw: entries before it are whatever the
/// client sent, so taking the first would let a client pick a fresh budget per request);
/// loopback for in-process calls (tests).
pub fn client_address(
    trust_forwarded_for: bool,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> IpAddr {
    let forwarded = trust_forwarded_for
        .then(|| {
            headers
                .get("x-forwarded-for")?
                .to_str()
                .ok()?
                .rsplit(',')
                .next()?
                .trim()
                .parse()
                .ok()
        })
        .flatten();
    forwarded
        .or(peer.map(|p| p.ip()))
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// Whether a request proves a credential before its body is read: a valid webhook token (or no
/// webhook secret configured), or the admin token.
fn credentialed(state: &AppState, request: &Request) -> bool {
    let path_token = auth::path_token(request.uri().path());
    let presented = auth::Presented {
        path_token: path_token.as_deref(),
        query: request.uri().query(),
    };
    state.auth.token_valid(presented, request.headers())
        || super::admin_token_valid(state, request.headers())
}

/// The layer in front of every route but health, readiness and metrics: answers 429 to an
/// address over its budget unless the request carries a token, and counts the refusals.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let client = client_address(state.trust_forwarded_for, request.headers(), peer);
    if let Err(secs) = state.refusals.check(client, Instant::now())
        && !credentialed(&state, &request)
    {
        state
            .pipeline
            .metrics()
            .add("hooklake_requests_total", "rate_limited", 1);
        // Debug, not info: a flood must not become a flood of log lines.
        tracing::debug!(%client, retry_after = secs, "request refused: over the refusal budget");
        return ApiError::RateLimited(secs).into_response();
    }
    let response = next.run(request).await;
    let status = response.status();
    if status.is_client_error()
        && status != StatusCode::TOO_MANY_REQUESTS
        && response.extensions().get::<Authenticated>().is_none()
    {
        state.refusals.charge(client, Instant::now());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn refusals_up_to_the_budget_then_it_refills() {
        let budget = RefusalBudget::new(3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(budget.check(a, t0), Ok(()), "checking takes nothing");
        }
        for _ in 0..3 {
            assert_eq!(budget.check(a, t0), Ok(()));
            budget.charge(a, t0);
        }
        assert_eq!(
            budget.check(a, t0),
            Err(20),
            "3 a minute: one refusal back every 20 s"
        );
        assert_eq!(
            budget.check(b, t0),
            Ok(()),
            "other addresses have their own"
        );
        assert_eq!(budget.check(a, t0 + Duration::from_secs(20)), Ok(()));
        let off = RefusalBudget::new(0);
        off.charge(a, t0);
        assert!(off.check(a, t0).is_ok());
    }

    #[test]
    fn an_overshoot_is_paid_back_by_a_longer_wait_bounded_by_one_budget() {
        let budget = RefusalBudget::new(60);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        // 70 requests checked together, all refused after: 10 more than the budget.
        for _ in 0..70 {
            budget.charge(a, t0);
        }
        assert_eq!(
            budget.check(a, t0),
            Err(11),
            "-10 left: 11 s until one is back"
        );
        for _ in 0..1000 {
            budget.charge(a, t0);
        }
        assert_eq!(budget.check(a, t0), Err(61), "the debt stops at one budget");
    }

    #[test]
    fn the_table_stays_bounded_and_checks_add_nothing() {
        let budget = RefusalBudget::new(60);
        let t0 = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 + 50) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(i));
            budget.check(ip, t0).unwrap();
        }
        assert!(budget.buckets.lock().unwrap().is_empty());
        for i in 0..(MAX_CLIENTS as u32 + 50) {
            budget.charge(IpAddr::from(std::net::Ipv4Addr::from(i)), t0);
        }
        assert!(budget.buckets.lock().unwrap().len() <= MAX_CLIENTS);
    }
}
