//! Where the crawler may connect: public addresses only, unless the knowledge base sets
//! `allow_private_addresses: true`. A web page (or a redirect, or a robots.txt sitemap)
//! must not make Lore fetch from the machine it runs on, its network, or a cloud's
//! metadata service (169.254.169.254).
//!
//! Checked on the address connected to, not on the name: names go through [`PublicOnly`],
//! a DNS resolver that drops private addresses (so a name that resolves, or is rebound, to
//! 127.0.0.1 is refused), and addresses written as IP literals, which are never resolved,
//! are checked by [`Guard::check_url`] at every hop. Behind an HTTP proxy set in the
//! environment the proxy resolves names, and only its own address and IP literals are
//! checked here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// What the crawler may connect to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Guard {
    /// `allow_private_addresses`: anything goes.
    pub allow_private: bool,
    /// Addresses taken for public ones: lets a test stand a loopback site in for the
    /// internet (nothing in the config sets it).
    pub treated_as_public: Arc<[IpAddr]>,
}

impl Guard {
    /// Whether `url` may be fetched, as far as can be told without resolving its name.
    pub fn check_url(&self, url: &Url) -> Result<(), String> {
        let ip = match url.host() {
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(Host::Domain(_)) | None => return Ok(()),
        };
        match self.refuses(ip) {
            Some(kind) => Err(format!("refused: {ip} is {kind}; {HOW_TO_ALLOW}")),
            None => Ok(()),
        }
    }

    /// Why `ip` may not be connected to, if it may not.
    fn refuses(&self, ip: IpAddr) -> Option<&'static str> {
        if self.allow_private || self.treated_as_public.contains(&ip) {
            return None;
        }
        not_public(ip)
    }

    /// The resolver the crawler's client uses; `None` when anything is allowed (the
    /// default resolver then).
    pub fn resolver(&self) -> Option<Arc<PublicOnly>> {
        (!self.allow_private).then(|| Arc::new(PublicOnly { guard: self.clone() }))
    }
}

/// What every refusal says to do about it.
const HOW_TO_ALLOW: &str =
    "set allow_private_addresses: true on the knowledge base (or lore ingest --allow-private) to crawl private addresses";

/// A DNS resolver that hands reqwest only the public addresses of a name.
pub struct PublicOnly {
    guard: Guard,
}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (public, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
                found.into_iter().partition(|a| guard.refuses(a.ip()).is_none());
            if public.is_empty() {
                let why = refused.iter().find_map(|a| Some((a.ip(), guard.refuses(a.ip())?)));
                return Err(match why {
                    Some((ip, kind)) => format!("refused: {host} resolves to {ip}, {kind}; {HOW_TO_ALLOW}"),
                    None => format!("{host} resolves to no address"),
                }
                .into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// What kind of address `ip` is when it is not a public one: where it leads is this
/// machine, its network, or nowhere on the internet.
pub fn not_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => not_public_v4(ip),
        IpAddr::V6(ip) => not_public_v6(ip),
    }
}

fn not_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "an unspecified address",
        (127, _, _) => "a loopback address",
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => "a private address",
        (169, 254, _) => "a link-local address",
        (100, 64..=127, _) => "a shared (carrier-grade NAT) address",
        (224..=239, _, _) => "a multicast address",
        (255, 255, 255) if ip.is_broadcast() => "a broadcast address",
        // IETF assignments, documentation, benchmarking, the old class E.
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) | (198, 18..=19, _) | (240..=255, _, _) => {
            "a reserved address"
        }
        _ => return None,
    })
}

fn not_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    // An IPv4 address inside an IPv6 one reaches that IPv4 address: mapped (::ffff:a.b.c.d),
    // the old compatible form (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d) and 6to4 (2002:ab:cd::).
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    let inner = match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0, 0, 0, 0, 0, 0, hi, lo] | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => {
            Some(embedded(hi, lo))
        }
        [0x2002, hi, lo, ..] => Some(embedded(hi, lo)),
        _ => None,
    };
    if let Some(v4) = inner {
        return not_public_v4(v4);
    }
    Some(match s[0] {
        0xfc00..=0xfdff => "a private address",
        0xfe80..=0xfebf => "a link-local address",
        0xfec0..=0xfeff => "a private address",
        0xff00..=0xffff => "a multicast address",
        0x2001 if s[1] == 0x0db8 => "a reserved address",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        let kind = |s: &str| not_public(s.parse().unwrap());
        for (ip, expected) in [
            ("127.0.0.1", "a loopback address"),
            ("127.8.9.10", "a loopback address"),
            ("10.1.2.3", "a private address"),
            ("172.16.0.1", "a private address"),
            ("172.31.255.255", "a private address"),
            ("192.168.1.1", "a private address"),
            ("169.254.169.254", "a link-local address"),
            ("100.64.0.1", "a shared (carrier-grade NAT) address"),
            ("0.0.0.0", "an unspecified address"),
            ("255.255.255.255", "a broadcast address"),
            ("224.0.0.1", "a multicast address"),
            ("192.0.2.7", "a reserved address"),
            ("::1", "a loopback address"),
            ("::", "an unspecified address"),
            ("::ffff:127.0.0.1", "a loopback address"),
            ("::ffff:169.254.169.254", "a link-local address"),
            ("64:ff9b::10.0.0.1", "a private address"),
            ("2002:c0a8:0101::1", "a private address"),
            ("fd12:3456::1", "a private address"),
            ("fe80::1", "a link-local address"),
            ("ff02::1", "a multicast address"),
        ] {
            assert_eq!(kind(ip), Some(expected), "{ip}");
        }
        for ip in ["93.184.216.34", "172.32.0.1", "100.128.0.1", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert_eq!(kind(ip), None, "{ip}");
        }
    }

    #[test]
    fn an_ip_literal_is_refused_by_name_with_the_key_to_set_unless_allowed() {
        let url = |s: &str| Url::parse(s).unwrap();
        let guard = Guard::default();
        let error = guard.check_url(&url("http://127.0.0.1:8080/docs/")).unwrap_err();
        assert!(error.starts_with("refused: 127.0.0.1 is a loopback address; set allow_private_addresses: true"));
        // Other spellings of the same address are the same address.
        assert!(guard.check_url(&url("http://2130706433/")).is_err());
        assert!(guard.check_url(&url("http://[::ffff:7f00:1]/")).is_err());
        assert!(guard.check_url(&url("http://example.org/")).is_ok(), "names are checked when resolved");
        let allowed = Guard { allow_private: true, ..Guard::default() };
        assert!(allowed.check_url(&url("http://10.0.0.1/")).is_ok());
        assert!(allowed.resolver().is_none());
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_in_words() {
        let resolver = Guard::default().resolver().unwrap();
        let error = resolver.resolve("localhost".parse().unwrap()).await.err().expect("refused").to_string();
        assert!(error.starts_with("refused: localhost resolves to "), "{error}");
        assert!(error.contains("a loopback address; set allow_private_addresses: true"), "{error}");
    }
}
