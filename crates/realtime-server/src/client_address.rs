//! Who the client is: the peer address, or, behind proxies the operator
//! trusts, the address those proxies name in `Forwarded` or
//! `X-Forwarded-For`. Forwarded headers from anyone else are ignored, so a
//! client cannot choose the address it is counted under (nor, for the CSRF
//! check of the app that embeds this server, the origin it addressed).

use std::net::{IpAddr, Ipv6Addr};

use actix_web::http::header::HeaderMap;

/// The proxies whose forwarded headers are believed (`TRUSTED_PROXIES`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// No proxy is trusted: the client is always the peer.
    pub fn none() -> Self {
        TrustedProxies(Vec::new())
    }

    /// Parses CIDRs or single addresses, separated by commas or spaces.
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse::<ipnet::IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("{item:?} is not an address or a CIDR such as 10.0.0.0/8"))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `address` is a trusted proxy.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0.iter().any(|net| net.contains(&address))
    }

    /// Whether a request from `peer` may speak for its client (its
    /// forwarded headers are believed).
    pub fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|peer| self.contains(peer))
    }

    /// The client's address. From an untrusted peer, the peer itself. From a
    /// trusted proxy, the chain of `Forwarded` (or, without it,
    /// `X-Forwarded-For`) is read from the nearest hop outwards, and the first
    /// address that is not a trusted proxy is the client; a chain of trusted
    /// proxies only gives its farthest one. An unreadable hop ends the walk at
    /// the last proxy that named it, so garbage never becomes an address.
    pub fn client_address(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer.map(canonical)?;
        if !self.contains(peer) {
            return Some(peer);
        }
        let hops = forwarded_for(headers);
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop {
                Some(address) => {
                    client = canonical(*address);
                    if !self.contains(client) {
                        return Some(client);
                    }
                }
                None => return Some(client),
            }
        }
        Some(client)
    }
}

/// What a client address is counted as, wherever clients are counted
/// (connections per address here, login failures in api-server): an IPv4
/// address itself, an IPv6 address its /64, since one subscriber is usually
/// given a whole /64 and could otherwise count as billions of clients. An
/// IPv4 address seen as IPv6 is the IPv4 address.
pub fn counted_network(address: IpAddr) -> IpAddr {
    match canonical(address) {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// The scheme and host a request was addressed to, as the proxy nearest to
/// this server forwarded them (`Forwarded: proto=…;host=…`, or
/// `X-Forwarded-Proto` / `X-Forwarded-Host`); `None` where it said nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardedOrigin {
    /// The scheme (`proto`).
    pub proto: Option<String>,
    /// The host, with its port if one was named.
    pub host: Option<String>,
}

impl TrustedProxies {
    /// What the nearest proxy says the client addressed, when `peer` is a
    /// trusted proxy; nothing from anyone else. Only what that proxy wrote
    /// itself is read: the last element of `Forwarded` when that header is
    /// present (a proxy that appends only `for=` leaves an earlier, client
    /// written `host=` where it was, and it is not believed), else the last
    /// value of `X-Forwarded-Proto` / `X-Forwarded-Host`.
    pub fn forwarded_origin(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> ForwardedOrigin {
        if !self.trusts(peer) {
            return ForwardedOrigin::default();
        }
        let forwarded: Vec<&str> = headers
            .get_all("forwarded")
            .filter_map(|v| v.to_str().ok())
            .collect();
        if !forwarded.is_empty() {
            let nearest = forwarded
                .iter()
                .flat_map(|value| value.split(','))
                .next_back()
                .unwrap_or_default();
            let param = |wanted: &str| {
                nearest.split(';').find_map(|pair| {
                    let (name, value) = pair.split_once('=')?;
                    let value = value.trim().trim_matches('"');
                    (name.trim().eq_ignore_ascii_case(wanted) && !value.is_empty())
                        .then(|| value.to_owned())
                })
            };
            return ForwardedOrigin {
                proto: param("proto"),
                host: param("host"),
            };
        }
        let last = |name: &str| {
            headers
                .get_all(name)
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .rfind(|v| !v.is_empty())
                .map(str::to_owned)
        };
        ForwardedOrigin {
            proto: last("x-forwarded-proto"),
            host: last("x-forwarded-host"),
        }
    }
}

/// An IPv4 address seen as IPv6 (`::ffff:a.b.c.d`) is the IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The hops a request passed, farthest first: the `for=` of every
/// `Forwarded` element when that header is present, else `X-Forwarded-For`.
/// A hop that is not an address (`unknown`, an obfuscated name, garbage) is
/// `None`.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<&str> = headers
        .get_all("forwarded")
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !forwarded.is_empty() {
        let hops: Vec<Option<IpAddr>> = forwarded
            .iter()
            .flat_map(|value| value.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (name, value) = pair.split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| parse_node(value.trim().trim_matches('"')))
                })
            })
            .collect();
        // A `Forwarded` that names no hop (only `proto=` or `host=`) leaves
        // the chain to `X-Forwarded-For`.
        if !hops.is_empty() {
            return hops;
        }
    }
    headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|hop| parse_node(hop.trim()))
        .collect()
}

/// One node of a forwarded chain: `1.2.3.4`, `1.2.3.4:80`, `[::1]`,
/// `[::1]:80` or a bare IPv6 address.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(address) = node.parse::<IpAddr>() {
        return Some(address);
    }
    if let Some(rest) = node.strip_prefix('[') {
        let (inside, _) = rest.split_once(']')?;
        return inside.parse().ok();
    }
    let (host, port) = node.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let forged = headers(&[("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=2.2.2.2")]);
        assert_eq!(
            proxies.client_address(ip("203.0.113.9"), &forged),
            ip("203.0.113.9")
        );
        assert_eq!(
            TrustedProxies::none().client_address(ip("127.0.0.1"), &forged),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_first_untrusted_hop_is_the_client() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1").unwrap();
        // The client put a forged hop first; the proxies appended the rest.
        let chain = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.2")]);
        assert_eq!(
            proxies.client_address(ip("127.0.0.1"), &chain),
            ip("198.51.100.7")
        );
        let forwarded = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https, for=10.0.0.2",
        )]);
        assert_eq!(
            proxies.client_address(ip("10.0.0.1"), &forwarded),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn a_forwarded_without_hops_leaves_the_chain_to_x_forwarded_for() {
        let proxies = TrustedProxies::parse("127.0.0.1").unwrap();
        let both = headers(&[
            ("forwarded", "proto=https;host=inbox.example"),
            ("x-forwarded-for", "192.0.2.60"),
        ]);
        assert_eq!(
            proxies.client_address(ip("127.0.0.1"), &both),
            ip("192.0.2.60")
        );
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for() {
        let proxies = TrustedProxies::parse("127.0.0.1").unwrap();
        let both = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("forwarded", "for=192.0.2.60:8080;by=203.0.113.43"),
        ]);
        assert_eq!(
            proxies.client_address(ip("127.0.0.1"), &both),
            ip("192.0.2.60")
        );
    }

    #[test]
    fn a_chain_of_proxies_only_or_without_headers_gives_the_farthest_proxy() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        assert_eq!(
            proxies.client_address(ip("10.0.0.1"), &headers(&[])),
            ip("10.0.0.1")
        );
        let all_proxies = headers(&[("x-forwarded-for", "10.0.0.3, 10.0.0.2")]);
        assert_eq!(
            proxies.client_address(ip("10.0.0.1"), &all_proxies),
            ip("10.0.0.3")
        );
    }

    #[test]
    fn an_unreadable_hop_stops_at_the_proxy_that_named_it() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let garbage = headers(&[("x-forwarded-for", "1.1.1.1, not-an-address, 10.0.0.2")]);
        assert_eq!(
            proxies.client_address(ip("10.0.0.1"), &garbage),
            ip("10.0.0.2")
        );
        let unknown = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(
            proxies.client_address(ip("10.0.0.1"), &unknown),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn mapped_ipv4_is_ipv4() {
        let proxies = TrustedProxies::parse("127.0.0.1").unwrap();
        assert!(proxies.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert_eq!(
            TrustedProxies::none().client_address(ip("::ffff:192.0.2.1"), &headers(&[])),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_and_ipv4_by_itself() {
        let net = |text: &str| counted_network(text.parse().unwrap());
        assert_eq!(net("2001:db8:1:2::7"), net("2001:db8:1:2:ffff::1"));
        assert_eq!(
            net("2001:db8:1:2::7"),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_ne!(net("2001:db8:1:2::7"), net("2001:db8:1:3::7"));
        assert_eq!(net("192.0.2.1"), "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_ne!(net("192.0.2.1"), net("192.0.2.2"));
        assert_eq!(net("::ffff:192.0.2.1"), net("192.0.2.1"));
    }

    #[test]
    fn the_forwarded_origin_is_the_nearest_proxys_and_only_a_trusted_ones() {
        let proxies = TrustedProxies::parse("127.0.0.1").unwrap();
        let origin = |peer: &str, pairs: &[(&'static str, &'static str)]| {
            proxies.forwarded_origin(ip(peer), &headers(pairs))
        };
        let said = |proto: Option<&str>, host: Option<&str>| ForwardedOrigin {
            proto: proto.map(str::to_owned),
            host: host.map(str::to_owned),
        };
        // From an untrusted peer: nothing.
        assert_eq!(
            origin(
                "203.0.113.9",
                &[("forwarded", "host=evil.example;proto=https")]
            ),
            said(None, None)
        );
        // The client's own element, followed by the one the proxy appended
        // with `for=` only: the client's host is not believed.
        assert_eq!(
            origin(
                "127.0.0.1",
                &[("forwarded", "host=evil.example;proto=https, for=192.0.2.1")]
            ),
            said(None, None)
        );
        assert_eq!(
            origin(
                "127.0.0.1",
                &[
                    ("forwarded", "host=evil.example"),
                    (
                        "forwarded",
                        "for=192.0.2.1;host=\"inbox.example:8443\";proto=https"
                    ),
                ]
            ),
            said(Some("https"), Some("inbox.example:8443"))
        );
        // Without Forwarded, the X-Forwarded-* value nearest to us.
        assert_eq!(
            origin(
                "127.0.0.1",
                &[
                    ("x-forwarded-host", "evil.example, inbox.example"),
                    ("x-forwarded-proto", "https"),
                ]
            ),
            said(Some("https"), Some("inbox.example"))
        );
    }

    #[test]
    fn parse_refuses_what_is_not_an_address() {
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.example").is_err());
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        assert!(TrustedProxies::parse("::1 192.168.0.0/16")
            .unwrap()
            .contains("192.168.4.4".parse().unwrap()));
    }
}
