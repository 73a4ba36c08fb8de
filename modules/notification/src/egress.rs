//! Where webhook calls may go: public addresses only, so a webhook URL
//! cannot make the shop call its own network (SSRF): loopback, private,
//! link-local (cloud metadata), CGNAT, unique-local, multicast, unspecified
//! and reserved addresses are refused, in every spelling (IPv4-mapped and
//! NAT64 IPv6, decimal or octal IPv4, names resolving to them), unless
//! `notification.webhook_allow` names their network (development, tests).
//!
//! The address is checked when the call is made, by the HTTP client's own
//! resolver, so a name that resolved to a public address at subscription
//! and to an internal one later (DNS rebinding) is still refused; redirects
//! are not followed (a 307 would replay the signed body to another host).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use url::{Host, Url};

/// The webhook egress rule: public addresses, plus the allowed networks.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    allow: Vec<IpNet>,
}

/// A call refused because of where it would go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl Egress {
    /// Public addresses, and the networks in `allow`.
    pub fn new(allow: Vec<IpNet>) -> Egress {
        Egress { allow }
    }

    /// Whether a call may go to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        !is_internal(ip) || self.allow.iter().any(|net| net.contains(&ip))
    }

    fn check_ip(&self, ip: IpAddr, what: &str) -> Result<(), Refused> {
        if self.permits(ip) {
            Ok(())
        } else {
            Err(Refused(format!(
                "{what} is an internal address ({ip}): webhooks go to public addresses only"
            )))
        }
    }

    /// Checks a URL whose host is an IP address (the HTTP client resolves
    /// names through [`Egress::resolver`], but never resolves a literal).
    ///
    /// # Errors
    /// The host is an internal address.
    pub fn check_literal(&self, url: &Url) -> Result<(), Refused> {
        match url.host() {
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip), "the host"),
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip), "the host"),
            Some(Host::Domain(name)) => self.check_name(name),
            None => Ok(()),
        }
    }

    /// Whether the URL is admitted although its host is outside the API's
    /// public-URL rule (`kernel::patterns::PUBLIC_HTTP_URL`): an IP address
    /// inside an allowed network, or `localhost` when both loopback
    /// addresses are allowed. Production allows none.
    pub fn admits_outside_public_rule(&self, url: &Url) -> bool {
        let listed = |ip: IpAddr| self.allow.iter().any(|net| net.contains(&ip));
        match url.host() {
            Some(Host::Ipv4(ip)) => listed(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => listed(IpAddr::V6(ip)),
            Some(Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                (name == "localhost" || name.ends_with(".localhost"))
                    && listed(IpAddr::V4(Ipv4Addr::LOCALHOST))
                    && listed(IpAddr::V6(Ipv6Addr::LOCALHOST))
            }
            None => false,
        }
    }

    /// `localhost` and its subdomains are loopback by definition (RFC 6761),
    /// with or without the final dot, whatever a resolver says of them.
    fn check_name(&self, name: &str) -> Result<(), Refused> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name == "localhost" || name.ends_with(".localhost") {
            self.check_ip(IpAddr::V4(Ipv4Addr::LOCALHOST), &format!("`{name}`"))?;
            self.check_ip(IpAddr::V6(Ipv6Addr::LOCALHOST), &format!("`{name}`"))?;
        }
        Ok(())
    }

    /// At subscription: refuses a URL whose host is, or now resolves to,
    /// an internal address. A name that does not resolve yet is accepted
    /// (it is checked again at every call).
    ///
    /// # Errors
    /// The host is, or resolves to, an internal address.
    pub async fn check_subscription(&self, url: &Url) -> Result<(), Refused> {
        self.check_literal(url)?;
        if let Some(Host::Domain(name)) = url.host()
            && let Ok(addrs) = tokio::net::lookup_host((name, 0)).await
        {
            for addr in addrs {
                self.check_ip(addr.ip(), &format!("`{name}`"))?;
            }
        }
        Ok(())
    }

    /// The resolver of the webhook client: the system's, with this rule
    /// applied to every address it answers. The client must also follow no
    /// redirect and use no proxy (`app::startup::webhook_client`).
    pub fn resolver(self: Arc<Self>) -> Arc<dyn reqwest::dns::Resolve> {
        Arc::new(Guarded(self))
    }
}

/// Resolves with the system resolver and refuses internal answers.
struct Guarded(Arc<Egress>);

impl reqwest::dns::Resolve for Guarded {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let egress = Arc::clone(&self.0);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            egress.check_name(&host)?;
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for addr in &addrs {
                egress.check_ip(addr.ip(), &format!("`{host}`"))?;
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The [`Refused`] in an error's chain, if the call was refused for where
/// it would go.
pub fn refusal<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused);
        }
        current = e.source();
    }
    None
}

fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16: cloud metadata lives here
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10 (Alibaba's metadata too)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || matches!(ip.octets(), [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _]) // TEST-NETs, used inside some networks
        || ip == Ipv4Addr::new(168, 63, 129, 16) // Azure's host agent (WireServer): reachable only from its VMs
        || a >= 240 // reserved
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_internal_v4(v4);
    }
    let segments = ip.segments();
    let embedded_v4 = |high: u16, low: u16| {
        Ipv4Addr::new(
            (high >> 8) as u8,
            (high & 0xff) as u8,
            (low >> 8) as u8,
            (low & 0xff) as u8,
        )
    };
    // IPv4-compatible (::a.b.c.d, deprecated) and NAT64 (64:ff9b::/96)
    // carry an IPv4 address that is reached in the end.
    if segments[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return is_internal_v4(embedded_v4(segments[6], segments[7]));
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_internal_v4(embedded_v4(segments[6], segments[7]));
    }
    // IPv4-translated (::ffff:0:a.b.c.d, SIIT) carries one the same way.
    if segments[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return is_internal_v4(embedded_v4(segments[6], segments[7]));
    }
    // Local-use NAT64 (64:ff9b:1::/48, RFC 8215) exists to reach
    // non-global IPv4 networks; Teredo (2001::/32) tunnels to an IPv4
    // address hidden in its bits. Neither is a public destination.
    if segments[..3] == [0x64, 0xff9b, 1] || segments[..2] == [0x2001, 0] {
        return true;
    }
    // 6to4 (2002::/16) carries one in its next 32 bits.
    if segments[0] == 0x2002 {
        return is_internal_v4(embedded_v4(segments[1], segments[2]));
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local fc00::/7 (AWS metadata fd00:ec2::254)
        || (segments[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (segments[0] & 0xffc0) == 0xfec0 // site-local, deprecated
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The client `app::startup::webhook_client` builds.
    fn client(egress: Egress) -> reqwest::Client {
        drop(rustls::crypto::ring::default_provider().install_default());
        reqwest::Client::builder()
            .dns_resolver(Arc::new(egress).resolver())
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn internal_addresses_in_every_spelling_are_refused() {
        let egress = Egress::default();
        for refused in [
            "http://127.0.0.1/",
            "http://127.1.2.3:8080/",
            "http://2130706433/", // decimal 127.0.0.1
            "http://0177.0.0.1/", // octal
            "http://0x7f.0.0.1/", // hex
            "http://10.0.0.1/",
            "http://172.16.5.4/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/",
            "http://100.100.100.200/",
            "http://0.0.0.0/",
            "http://224.0.0.1/",
            "http://[::1]/",
            "http://[::]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[64:ff9b:1::a9fe:a9fe]/", // local-use NAT64
            "http://[::ffff:0:a9fe:a9fe]/",   // IPv4-translated
            "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", // Teredo
            "http://[2002:7f00:1::]/",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]/",
            "http://[ff02::1]/",
            "http://168.63.129.16/", // Azure's host agent
            "http://[::ffff:168.63.129.16]/",
            "http://192.0.2.10/",
            "http://198.51.100.7/",
            "http://203.0.113.200/",
        ] {
            assert!(egress.check_literal(&url(refused)).is_err(), "{refused}");
        }
        for public in [
            "https://93.184.216.34/",
            "https://[2606:2800:220:1:248:1893:25c8:1946]/",
            "https://[2001:db9::1]/",        // 2001::/23 beyond Teredo's /32
            "https://[64:ff9b::5db8:d822]/", // well-known NAT64 of 93.184.216.34
            "https://hooks.example.com/",
        ] {
            assert!(egress.check_literal(&url(public)).is_ok(), "{public}");
        }
    }

    #[test]
    fn the_allow_list_opens_named_networks_only() {
        let egress = Egress::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(egress.check_literal(&url("http://127.0.0.1:9000/")).is_ok());
        assert!(
            egress
                .check_literal(&url("http://[::ffff:127.0.0.1]/"))
                .is_err()
        );
        assert!(egress.check_literal(&url("http://10.0.0.1/")).is_err());
    }

    #[test]
    fn only_allowed_networks_admit_urls_outside_the_public_rule() {
        let none = Egress::default();
        let loopback = Egress::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        for text in [
            "http://127.0.0.1:9000/",
            "http://[::1]/",
            "https://localhost:8443/",
            "http://localhost./",
        ] {
            assert!(!none.admits_outside_public_rule(&url(text)), "{text}");
            assert!(loopback.admits_outside_public_rule(&url(text)), "{text}");
        }
        for text in ["http://93.184.216.34/", "http://10.0.0.1/", "http://0.aa*/"] {
            assert!(!loopback.admits_outside_public_rule(&url(text)), "{text}");
        }
        let v4_only = Egress::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(!v4_only.admits_outside_public_rule(&url("http://localhost/")));
    }

    /// A one-shot HTTP server on 127.0.0.1 answering `response`.
    async fn answering(response: &'static str) -> u16 {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn the_client_refuses_internal_names_at_connect_time_and_follows_no_redirect() {
        let port = answering("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        let closed = client(Egress::default());
        let error = closed
            .post(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();
        let refused = refusal(&error).expect("refused by the egress rule");
        assert!(refused.0.contains("internal address"), "{refused}");

        let redirect = answering(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:1/\r\ncontent-length: 0\r\n\r\n",
        )
        .await;
        let open = client(Egress::new(vec!["127.0.0.0/8".parse().unwrap()]));
        let answer = open
            .post(format!("http://127.0.0.1:{redirect}/"))
            .body("signed")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 307, "the redirect is the answer");
    }

    #[tokio::test]
    async fn names_are_checked_by_what_they_resolve_to() {
        let egress = Egress::default();
        for name in [
            "http://localhost/",
            "http://localhost./",
            "http://LOCALHOST:8080/x",
        ] {
            let refused = egress.check_subscription(&url(name)).await.unwrap_err();
            assert!(refused.0.contains("internal address"), "{name}: {refused}");
        }
        // Unresolvable now: accepted, and checked again at every call.
        assert!(
            egress
                .check_subscription(&url("http://no-such-host.invalid/"))
                .await
                .is_ok()
        );
    }
}
