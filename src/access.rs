//! Who may call the webhook endpoints: an optional IP allowlist, and whose
//! `X-Forwarded-For` to believe.
//!
//! With `server.allow_cidrs` empty, everyone may call (the signature is the real check).
//! Otherwise the client's address must be in one of them, else 403 before anything else.
//! The client's address is the TCP peer's, unless the peer is one of
//! `server.trusted_proxies`: then it is the right-most address in `X-Forwarded-For` that is
//! not itself a trusted proxy (the left part of that header is whatever the client wrote,
//! so it is never believed). Pure.

use std::net::IpAddr;

use ipnet::IpNet;

/// The configured allowlist and trusted proxies.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    allow: Vec<IpNet>,
    trusted_proxies: Vec<IpNet>,
}

/// Parses CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or single addresses (`192.0.2.7`).
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an address or CIDR, e.g. \"10.0.0.0/8\""))
}

impl AccessPolicy {
    pub fn new(allow: Vec<IpNet>, trusted_proxies: Vec<IpNet>) -> Self {
        Self {
            allow,
            trusted_proxies,
        }
    }

    /// Whether the allowlist applies at all.
    pub fn restricts(&self) -> bool {
        !self.allow.is_empty()
    }

    /// The client's address, per the rules above.
    pub fn client_ip(&self, peer: Option<IpAddr>, forwarded_for: Option<&str>) -> Option<IpAddr> {
        let peer = peer.map(canonical)?;
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let Some(header) = forwarded_for else {
            return Some(peer);
        };
        let mut client = peer;
        for hop in header.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = canonical(ip);
                    if !self.is_trusted(client) {
                        return Some(client);
                    }
                }
                // Garbage in the chain: stop believing it.
                Err(_) => return Some(client),
            }
        }
        Some(client)
    }

    /// Whether a request from `peer` (with that `X-Forwarded-For`) may proceed.
    pub fn allows(&self, peer: Option<IpAddr>, forwarded_for: Option<&str>) -> bool {
        if !self.restricts() {
            return true;
        }
        self.client_ip(peer, forwarded_for)
            .is_some_and(|ip| self.allow.iter().any(|net| net.contains(&ip)))
    }

    /// Whether `ip` is one of `server.trusted_proxies`.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

/// Every `X-Forwarded-For` header line, in order, as one comma-separated list (RFC 9110
/// §5.3): a proxy may append its own line after one the client sent, and the hop it
/// appended is the one to believe. A line that is not text breaks the chain where it stands.
pub fn forwarded_for<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Option<String> {
    let texts: Vec<&str> = lines
        .map(|line| std::str::from_utf8(line).unwrap_or("not-an-address"))
        .collect();
    (!texts.is_empty()).then(|| texts.join(","))
}

/// `::ffff:10.1.2.3` → `10.1.2.3`, so IPv4 rules match dual-stack sockets.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|c| parse_cidr(c).unwrap()).collect()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn joins_every_forwarded_for_line_in_order_and_marks_what_is_not_text() {
        let lines: [&[u8]; 3] = [b"192.0.2.5", b"198.51.100.1, 10.0.0.1", b"\xff"];
        assert_eq!(
            forwarded_for(lines.into_iter()).as_deref(),
            Some("192.0.2.5,198.51.100.1, 10.0.0.1,not-an-address")
        );
        assert_eq!(forwarded_for(std::iter::empty()), None);
    }

    #[test]
    fn lets_everyone_in_without_an_allowlist() {
        let p = AccessPolicy::default();
        assert!(p.allows(ip("203.0.113.9"), None));
    }

    #[test]
    fn allows_only_listed_networks_by_peer_address() {
        let p = AccessPolicy::new(nets(&["34.240.0.0/13", "192.0.2.7"]), vec![]);
        assert!(p.allows(ip("34.241.1.1"), None));
        assert!(p.allows(ip("192.0.2.7"), None));
        assert!(p.allows(ip("::ffff:34.241.1.1"), None));
        assert!(!p.allows(ip("192.0.2.8"), None));
        assert!(!p.allows(None, None));
    }

    #[test]
    fn believes_forwarded_for_only_from_trusted_proxies() {
        let p = AccessPolicy::new(nets(&["34.240.0.0/13"]), nets(&["10.0.0.0/8"]));
        // Through our proxy: the right-most untrusted hop is the client.
        assert!(p.allows(ip("10.1.1.1"), Some("34.241.1.1")));
        assert!(p.allows(ip("10.1.1.1"), Some("1.2.3.4, 34.241.1.1, 10.2.2.2")));
        // A client prepending an allowed address gains nothing.
        assert!(!p.allows(ip("10.1.1.1"), Some("34.241.1.1, 198.51.100.1")));
        // Not through a trusted proxy: the header is ignored.
        assert!(!p.allows(ip("198.51.100.1"), Some("34.241.1.1")));
        // Garbage stops the walk at the last good hop.
        assert!(!p.allows(ip("10.1.1.1"), Some("34.241.1.1, nonsense")));
    }

    #[test]
    fn rejects_malformed_cidrs_with_an_example() {
        assert!(parse_cidr("10.0.0.0/33").unwrap_err().contains("e.g."));
        assert!(parse_cidr("example.com").is_err());
    }
}
