//! Per-client-IP rate limits (GCRA, via `governor`) on `/token`, second-factor endpoints and
//! registration, answered with 429 and `Retry-After`; and the client IP itself.
//!
//! The client IP is the socket's peer, or — only behind `trusted_proxies` reverse proxies —
//! the `X-Forwarded-For` entry the outermost trusted proxy added, counting from the right.
//! The left-most entries are whatever the client claimed and are never used.
//!
//! Limits are per instance (in memory); the per-account lockout that must hold across
//! instances lives in the database (tessera-auth).

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use governor::clock::{Clock as _, DefaultClock};
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::config::Config;
use crate::error::AppError;

type Limiter = RateLimiter<IpAddr, DashMapStateStore<IpAddr>, DefaultClock>;

/// Which limit a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// `POST /token`.
    Token,
    /// Second-factor codes.
    Mfa,
    /// `POST /users`.
    Registration,
}

/// The limiters of one server instance.
#[derive(Debug)]
pub struct RateLimits {
    token: Option<Limiter>,
    mfa: Option<Limiter>,
    registration: Option<Limiter>,
    clock: DefaultClock,
}

fn limiter(per_minute: u32) -> Option<Limiter> {
    // A burst of the full minute's allowance, refilled evenly.
    NonZeroU32::new(per_minute).map(|n| RateLimiter::dashmap(Quota::per_minute(n).allow_burst(n)))
}

impl RateLimits {
    /// Limiters sized from the configuration (a 0 limit is off).
    #[must_use]
    pub fn new(config: &Config) -> Self {
        Self {
            token: limiter(config.rate_token_per_minute),
            mfa: limiter(config.rate_mfa_per_minute),
            registration: limiter(config.rate_registration_per_minute),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one request from `ip`.
    ///
    /// # Errors
    /// 429 `rate_limited` with `Retry-After` when the client is over the limit.
    pub fn check(&self, bucket: Bucket, ip: IpAddr) -> Result<(), AppError> {
        let limiter = match bucket {
            Bucket::Token => &self.token,
            Bucket::Mfa => &self.mfa,
            Bucket::Registration => &self.registration,
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            tracing::warn!(%ip, ?bucket, "rate limit hit");
            AppError::rate_limited(secs.max(1))
        })
    }

    /// Forgets clients that are back within their limits (bounds memory).
    pub fn shrink(&self) {
        for l in [&self.token, &self.mfa, &self.registration]
            .into_iter()
            .flatten()
        {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// The client's IP: the socket peer, or with `trusted_proxies` > 0 the address the
/// outermost trusted proxy saw (the `trusted_proxies`-th `X-Forwarded-For` entry from the
/// right). Falls back to the socket peer when the header is missing, short or malformed.
#[must_use]
pub fn client_ip(
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    trusted_proxies: usize,
) -> Option<IpAddr> {
    let socket = peer.map(|p| p.ip());
    if trusted_proxies == 0 {
        return socket;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let Some(index) = entries.len().checked_sub(trusted_proxies) else {
        return socket;
    };
    entries
        .get(index)
        .and_then(|e| {
            e.parse::<IpAddr>()
                .ok()
                .or_else(|| e.parse::<SocketAddr>().ok().map(|s| s.ip()))
        })
        .or(socket)
}

/// How often to shrink the limiter tables.
pub const SHRINK_EVERY: Duration = Duration::from_secs(60);

impl AppError {
    /// 429 with `Retry-After`.
    #[must_use]
    pub fn rate_limited(retry_after: u64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests from this address; retry in {retry_after} s"),
        )
        .with_retry_after(retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_trusted_hops_are_believed() {
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let h = headers(&["6.6.6.6, 1.2.3.4"]);
        assert_eq!(
            client_ip(&h, Some(peer), 0),
            Some("10.0.0.1".parse().unwrap()),
            "no proxies: the socket"
        );
        assert_eq!(
            client_ip(&h, Some(peer), 1),
            Some("1.2.3.4".parse().unwrap()),
            "one proxy: the last entry"
        );
        assert_eq!(
            client_ip(&h, Some(peer), 2),
            Some("6.6.6.6".parse().unwrap())
        );
        assert_eq!(
            client_ip(&h, Some(peer), 3),
            Some("10.0.0.1".parse().unwrap()),
            "too few entries: the socket"
        );
        let split = headers(&["6.6.6.6", "1.2.3.4"]);
        assert_eq!(
            client_ip(&split, Some(peer), 1),
            Some("1.2.3.4".parse().unwrap()),
            "several headers are one list"
        );
        let junk = headers(&["not-an-ip"]);
        assert_eq!(
            client_ip(&junk, Some(peer), 1),
            Some("10.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn limits_refuse_after_the_burst_with_a_retry_time() {
        let mut c = Config::for_tests(std::path::Path::new("/tmp"));
        c.rate_token_per_minute = 3;
        let l = RateLimits::new(&c);
        let ip: IpAddr = "1.2.3.4".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check(Bucket::Token, ip).is_ok());
        }
        let e = l.check(Bucket::Token, ip).unwrap_err();
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            l.check(Bucket::Token, "5.6.7.8".parse().unwrap()).is_ok(),
            "per client"
        );
        c.rate_token_per_minute = 0;
        let off = RateLimits::new(&c);
        for _ in 0..100 {
            assert!(off.check(Bucket::Token, ip).is_ok());
        }
    }
}
