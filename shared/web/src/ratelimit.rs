//! Rate limits answered with a 429 problem and `Retry-After`.
//!
//! [`PeerIp`] keys actix-governor's per-client limit on the whole API
//! (by address; the shop's own module calls, [`Client::Shop`], are not
//! counted);
//! [`KeyedLimit`] is for stricter limits inside handlers (sign-in per IP and
//! per account, registration per IP). State is per process: with several
//! instances each enforces its own budget (docs/adr/0007-rate-limits.md).

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_governor::governor::clock::{Clock as _, DefaultClock, QuantaInstant};
use actix_governor::governor::middleware::NoOpMiddleware;
use actix_governor::governor::{NotUntil, Quota, RateLimiter};
use actix_governor::{KeyExtractor, SimpleKeyExtractionError};
use actix_web::HttpMessage as _;
use actix_web::dev::ServiceRequest;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, HttpResponseBuilder, ResponseError as _};

use crate::Problem;

/// The 429 problem for a caller who must wait `wait`.
pub fn too_many_requests(wait: Duration) -> Problem {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests; retry in {seconds} s"),
    )
    .with_retry_after(seconds.max(1))
}

/// The header a trusted proxy (our own gateway) names the client in.
pub const FORWARDED_FOR: &str = "x-forwarded-for";

/// A proxy whose `x-forwarded-for` is believed: one address (`10.0.0.2`)
/// or a range of them (`10.0.0.0/8`, `fd00::/8`), for proxies whose
/// addresses change (an Ingress's or a gateway's pods).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy(ipnet::IpNet);

impl TrustedProxy {
    /// Whether `ip` is this proxy, or in its range.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.contains(ip)
    }
}

impl std::str::FromStr for TrustedProxy {
    type Err = String;

    fn from_str(s: &str) -> Result<TrustedProxy, String> {
        let s = s.trim();
        if s.contains('/') {
            s.parse::<ipnet::IpNet>()
                .map(|net| TrustedProxy(net.trunc()))
                .map_err(|e| format!("`{s}` is not an address range (like 10.0.0.0/8): {e}"))
        } else {
            s.parse::<IpAddr>()
                .map(|ip| TrustedProxy(ipnet::IpNet::from(ip)))
                .map_err(|e| format!("`{s}` is not an address (like 10.0.0.2): {e}"))
        }
    }
}

impl<'de> serde::Deserialize<'de> for TrustedProxy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TrustedProxy, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The client's address: the TCP peer, unless the peer is one of `trusted`
/// proxies, in which case the last address of `x-forwarded-for` (the one
/// the proxy added; of the last line when it came in several, since a proxy
/// may add a line of its own below the client's). Anyone else's
/// `x-forwarded-for` is ignored, so clients cannot pick their own
/// rate-limit bucket.
pub fn client_ip(
    peer: Option<std::net::SocketAddr>,
    headers: &actix_web::http::header::HeaderMap,
    trusted: &[TrustedProxy],
) -> Option<IpAddr> {
    // `::ffff:10.0.0.2` (an IPv4 peer on an IPv6 socket) is `10.0.0.2`.
    let peer = peer?.ip().to_canonical();
    if !trusted.iter().any(|proxy| proxy.contains(&peer)) {
        return Some(peer);
    }
    headers
        .get_all(FORWARDED_FOR)
        .last()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|ip| ip.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .or(Some(peer))
}

/// The bucket a client's address counts in: an IPv4 address alone, an
/// IPv6 address with its /64 (one subscriber's network: a client holding
/// one picks any of its 2^64 addresses, and must not get a limit per
/// address).
pub fn bucket(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// The site an IPv6 client's /64 belongs to: its /56, the delegation a
/// provider most often routes to one subscriber (256 /64s, each a
/// [`bucket`] of its own; a /48, what tunnel brokers and some providers
/// hand out, is 256 such sites, where it was 65,536 clients). Not the /48:
/// many providers hand one to a whole neighbourhood of /56s, which would
/// share one budget. `None` for IPv4, whose addresses are not had by the
/// thousand. The stricter limits (sign-in, registration) also count a
/// site's clients together ([`SITE_SHARE`]).
pub fn site(ip: IpAddr) -> Option<IpAddr> {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 72) - 1);
            Some(IpAddr::V6(std::net::Ipv6Addr::from(bits)))
        }
        IpAddr::V4(_) => None,
    }
}

/// How many clients' budgets an IPv6 site ([`site`]) has under a stricter
/// limit: a household or an office with several networks is not one
/// client, but one subscriber must not get 256 budgets.
pub const SITE_SHARE: u32 = 16;

/// Keys the API-wide limit by the client's IP address ([`client_ip`]), an
/// IPv6 client by its /64 ([`bucket`]).
#[derive(Debug, Clone)]
pub struct PeerIp {
    /// Proxies whose `x-forwarded-for` is believed.
    pub trusted: std::sync::Arc<Vec<TrustedProxy>>,
}

/// Whom a request of the API counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    /// A client, by its address ([`client_ip`]).
    Address(IpAddr),
    /// The shop itself: a module of another process calling this one with
    /// a verified service token (ADR 0013). Never limited here: the caller
    /// bounds its calls with its own bulkhead, and counting them per address
    /// would limit every customer of the calling process as one client.
    Shop,
}

impl KeyExtractor for PeerIp {
    type Key = Client;
    type KeyExtractionError = SimpleKeyExtractionError<&'static str>;

    fn extract(&self, req: &ServiceRequest) -> Result<Client, Self::KeyExtractionError> {
        // The caller was verified by `auth::middleware`, which runs first;
        // only the service key signs the `service` role.
        let shop = req
            .extensions()
            .get::<kernel::Caller>()
            .is_some_and(|caller| caller.has(kernel::Role::Service));
        if shop {
            return Ok(Client::Shop);
        }
        client_ip(req.peer_addr(), req.headers(), &self.trusted)
            .map(|ip| Client::Address(bucket(ip)))
            .ok_or_else(|| SimpleKeyExtractionError::new("cannot tell the client's address"))
    }

    fn whitelisted_keys(&self) -> Vec<Client> {
        vec![Client::Shop]
    }

    fn exceed_rate_limit_response(
        &self,
        negative: &NotUntil<QuantaInstant>,
        _response: HttpResponseBuilder,
    ) -> HttpResponse {
        too_many_requests(negative.wait_time_from(DefaultClock::default().now())).error_response()
    }
}

/// A limiter keyed by client, as actix-governor and [`KeyedLimit`] hold one.
pub type ClientLimiter<K> = RateLimiter<
    K,
    actix_governor::governor::state::keyed::DefaultKeyedStateStore<K>,
    DefaultClock,
    NoOpMiddleware<QuantaInstant>,
>;

/// Every `every`, until `stop` turns true, forgets the clients of `limiter`
/// whose budget is whole again ([`forget_idle_once`]): actix-governor keeps
/// a client it has seen for ever, so without this the API-wide limit's map
/// grows by one entry per address (per /64) that ever called.
pub async fn forget_idle<K: Hash + Eq + Clone>(
    limiter: std::sync::Arc<ClientLimiter<K>>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => forget_idle_once(&limiter),
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

/// Forgets the clients of `limiter` whose budget is whole again (their
/// state is the one a new client starts from), and gives the memory back.
pub fn forget_idle_once<K: Hash + Eq + Clone>(limiter: &ClientLimiter<K>) {
    limiter.retain_recent();
    limiter.shrink_to_fit();
}

/// A limit of `per_minute` events per key, with bursts up to the same number.
pub struct KeyedLimit<K: Hash + Eq + Clone> {
    limiter: Option<ClientLimiter<K>>,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> std::fmt::Debug for KeyedLimit<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedLimit")
            .field("enabled", &self.limiter.is_some())
            .finish()
    }
}

impl<K: Hash + Eq + Clone> KeyedLimit<K> {
    /// `per_minute` events per key; `None` (or 0) disables the limit.
    pub fn per_minute(per_minute: Option<u32>) -> KeyedLimit<K> {
        KeyedLimit {
            limiter: per_minute
                .and_then(NonZeroU32::new)
                .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one event for `key`.
    ///
    /// # Errors
    /// A 429 problem when `key` is over its limit.
    pub fn check(&self, key: &K) -> Result<(), Problem> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        // Forget idle keys now and then, so the map does not grow forever.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            limiter.retain_recent();
        }
        limiter.check_key(key).map_err(|not_until| {
            too_many_requests(not_until.wait_time_from(DefaultClock::default().now()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_s_site_is_its_56_and_ipv4_has_none() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            site(ip("2001:db8:aa:bb01:1:2:3:4")),
            Some(ip("2001:db8:aa:bb00::"))
        );
        assert_eq!(
            site(ip("2001:db8:aa:bbff::1")),
            Some(ip("2001:db8:aa:bb00::"))
        );
        assert_ne!(
            site(ip("2001:db8:aa:bc00::1")),
            Some(ip("2001:db8:aa:bb00::"))
        );
        assert_eq!(site(ip("203.0.113.7")), None);
        assert_eq!(
            site(ip("::ffff:203.0.113.7")),
            None,
            "a mapped IPv4 is IPv4"
        );
    }

    /// A client whose budget is whole again is forgotten, one still short
    /// of it is kept: the map holds the clients of the last moments, not
    /// every client ever.
    #[test]
    fn idle_clients_are_forgotten() {
        // A cell every 500 ms: a client that spent one is whole again
        // after 500 ms, the busy one (five spent) only after 2.5 s.
        let quota =
            Quota::per_second(NonZeroU32::new(2).unwrap()).allow_burst(NonZeroU32::new(5).unwrap());
        let limiter: ClientLimiter<u32> = RateLimiter::keyed(quota);
        for client in 0..1000 {
            assert!(limiter.check_key(&client).is_ok());
        }
        assert_eq!(limiter.len(), 1000);
        std::thread::sleep(Duration::from_millis(1200));
        let busy = 7;
        for _ in 0..5 {
            let _ = limiter.check_key(&busy);
        }
        forget_idle_once(&limiter);
        assert_eq!(
            limiter.len(),
            1,
            "only the client still short of its budget"
        );
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64_and_an_ipv4_one_by_its_address() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            bucket(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            bucket(ip("2001:db8:1:2::9")),
            bucket(ip("2001:db8:1:2:ffff::1"))
        );
        assert_ne!(bucket(ip("2001:db8:1:2::9")), bucket(ip("2001:db8:1:3::9")));
        assert_eq!(bucket(ip("203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(bucket(ip("::ffff:203.0.113.7")), ip("203.0.113.7"));
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let mut headers = actix_web::http::header::HeaderMap::new();
        headers.insert(
            actix_web::http::header::HeaderName::from_static(FORWARDED_FOR),
            actix_web::http::header::HeaderValue::from_static("6.6.6.6, 203.0.113.7"),
        );
        let gateway: std::net::SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let trusted = ["10.0.0.2".parse().unwrap()];
        assert_eq!(
            client_ip(Some(gateway), &headers, &trusted),
            Some("203.0.113.7".parse().unwrap())
        );
        assert_eq!(
            client_ip(Some(gateway), &headers, &[]),
            Some("10.0.0.2".parse().unwrap())
        );
        let empty = actix_web::http::header::HeaderMap::new();
        assert_eq!(
            client_ip(Some(gateway), &empty, &trusted),
            Some("10.0.0.2".parse().unwrap())
        );
        // A proxy that adds a line of its own: the last line's is believed,
        // not the line the client wrote.
        let mut lines = actix_web::http::header::HeaderMap::new();
        let name = actix_web::http::header::HeaderName::from_static(FORWARDED_FOR);
        lines.append(
            name.clone(),
            actix_web::http::header::HeaderValue::from_static("6.6.6.6"),
        );
        lines.append(
            name,
            actix_web::http::header::HeaderValue::from_static("203.0.113.8"),
        );
        assert_eq!(
            client_ip(Some(gateway), &lines, &trusted),
            Some("203.0.113.8".parse().unwrap())
        );
        // A range: any of its addresses is believed, none outside it.
        let pods = ["10.0.0.0/16".parse().unwrap()];
        assert_eq!(
            client_ip(Some(gateway), &headers, &pods),
            Some("203.0.113.7".parse().unwrap())
        );
        let mapped: std::net::SocketAddr = "[::ffff:10.0.0.2]:5000".parse().unwrap();
        assert_eq!(
            client_ip(Some(mapped), &headers, &pods),
            Some("203.0.113.7".parse().unwrap()),
            "an IPv4 proxy on an IPv6 socket"
        );
        let outside: std::net::SocketAddr = "10.1.0.2:5000".parse().unwrap();
        assert_eq!(
            client_ip(Some(outside), &headers, &pods),
            Some("10.1.0.2".parse().unwrap())
        );
    }

    #[test]
    fn a_trusted_proxy_is_an_address_or_a_range() {
        let parse = |s: &str| s.parse::<TrustedProxy>();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(parse("10.0.0.2").unwrap().contains(&ip("10.0.0.2")));
        assert!(!parse("10.0.0.2").unwrap().contains(&ip("10.0.0.3")));
        // Host bits are dropped: the range of 10.0.0.9/24 is 10.0.0.0/24.
        assert!(parse("10.0.0.9/24").unwrap().contains(&ip("10.0.0.200")));
        assert!(parse("fd00::/8").unwrap().contains(&ip("fd12::1")));
        for wrong in ["10.0.0.0/33", "10.0.0", "gateway", "10.0.0.0/"] {
            let err = parse(wrong).unwrap_err();
            assert!(err.contains(wrong), "{err}");
        }
    }

    #[test]
    fn the_limit_answers_429_with_retry_after() {
        let limit = KeyedLimit::per_minute(Some(2));
        assert!(limit.check(&"a").is_ok());
        assert!(limit.check(&"a").is_ok());
        let problem = limit.check(&"a").unwrap_err();
        assert_eq!(problem.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(limit.check(&"b").is_ok(), "keys are limited separately");
        let disabled = KeyedLimit::per_minute(None);
        for _ in 0..100 {
            assert!(disabled.check(&"a").is_ok());
        }
    }
}
