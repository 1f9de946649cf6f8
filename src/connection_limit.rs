//! The cap on the connections one client address may hold at once
//! (`server.max_connections_per_address`), checked as each TCP connection is accepted,
//! before a byte of it is read or a TLS handshake is begun.
//!
//! `server.max_connections` bounds every connection together; without this cap, one client
//! could hold all of them (a keep-alive connection asking for `/healthz` now and then is
//! never closed) and Qminder's connection would wait in the kernel's backlog. A connection
//! over the cap is closed at once and counted
//! (`qminder_bridge_connections_refused_total{reason="per_address_limit"}`; a DEBUG line).
//!
//! An address is an IPv4 address, or an IPv6 /64 (one host is given a whole /64, so counting
//! single IPv6 addresses would cap nothing). Connections from `server.trusted_proxies`
//! are not capped: a proxy carries many clients, and caps them itself. Which proxies are
//! trusted is read from the live configuration at each accept.
//!
//! Relies on actix-server calling the listener's service once per accepted connection, and
//! on that call's future living as long as the connection: [`Held`] lives in it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use prometheus::IntCounter;

/// Whether a client address is exempt from the cap (a trusted proxy).
pub type Exempt = Box<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// Open connections by client address, and the cap.
pub struct ConnectionLimit {
    /// 0: no cap.
    cap: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
    exempt: Exempt,
    refused: IntCounter,
}

impl std::fmt::Debug for ConnectionLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionLimit")
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

/// What became of a new connection.
#[derive(Debug)]
pub enum Admission {
    /// Serve it; its count is given back when this is dropped.
    Admitted(Held),
    /// Close it: its address holds `cap` connections already.
    Refused,
}

/// One admitted connection's place in the count.
#[derive(Debug)]
pub struct Held {
    limit: Arc<ConnectionLimit>,
    /// `None`: not counted (no cap, an exempt or unknown address).
    address: Option<IpAddr>,
}

impl ConnectionLimit {
    pub fn new(cap: usize, exempt: Exempt, refused: IntCounter) -> Arc<Self> {
        Arc::new(Self {
            cap,
            open: Mutex::default(),
            exempt,
            refused,
        })
    }

    /// Admits a connection from `peer` if its address holds fewer than the cap.
    pub fn admit(self: &Arc<Self>, peer: Option<IpAddr>) -> Admission {
        // Exempt by its own address (a proxy is listed as one), counted by its /64.
        let address = peer
            .filter(|ip| self.cap > 0 && !(self.exempt)(*ip))
            .map(address_of);
        if let Some(address) = address {
            let mut open = self
                .open
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let count = open.entry(address).or_default();
            if *count >= self.cap {
                drop(open);
                self.refused.inc();
                tracing::debug!(%address, cap = self.cap, "Connection refused: its address holds server.max_connections_per_address connections.");
                return Admission::Refused;
            }
            *count += 1;
        }
        Admission::Admitted(Held {
            limit: Arc::clone(self),
            address,
        })
    }

    /// Connections counted against `address` now.
    pub fn open(&self, address: IpAddr) -> usize {
        let open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.get(&address_of(address)).copied().unwrap_or(0)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(address) = self.address else { return };
        let mut open = self
            .limit
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&address);
            }
        }
    }
}

/// What the cap counts by: an IPv4 address (also when written IPv4-mapped), or the /64 an
/// IPv6 address is in.
fn address_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(cap: usize, exempt: &'static str) -> Arc<ConnectionLimit> {
        let exempt: IpAddr = exempt.parse().unwrap();
        ConnectionLimit::new(
            cap,
            Box::new(move |a| a == exempt),
            IntCounter::new("r", "r").unwrap(),
        )
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn refuses_an_address_its_connection_beyond_the_cap_until_one_closes() {
        let limit = limit(2, "10.9.9.9");
        let first = limit.admit(ip("10.0.0.1"));
        let _second = limit.admit(ip("10.0.0.1"));
        assert!(matches!(limit.admit(ip("10.0.0.1")), Admission::Refused));
        assert!(matches!(
            limit.admit(ip("10.0.0.2")),
            Admission::Admitted(_)
        ));
        drop(first);
        assert!(matches!(
            limit.admit(ip("10.0.0.1")),
            Admission::Admitted(_)
        ));
        assert_eq!(limit.refused.get(), 1);
    }

    #[test]
    fn counts_an_ipv6_slash_64_as_one_address_and_mapped_ipv4_as_ipv4() {
        let limit = limit(1, "10.9.9.9");
        let _a = limit.admit(ip("2001:db8:1:2::1"));
        assert!(matches!(
            limit.admit(ip("2001:db8:1:2:ffff::9")),
            Admission::Refused
        ));
        assert!(matches!(
            limit.admit(ip("2001:db8:1:3::1")),
            Admission::Admitted(_)
        ));
        let _b = limit.admit(ip("10.0.0.1"));
        assert!(matches!(
            limit.admit(ip("::ffff:10.0.0.1")),
            Admission::Refused
        ));
    }

    #[test]
    fn does_not_cap_exempt_addresses_unknown_peers_or_a_cap_of_zero() {
        let capped = limit(1, "10.9.9.9");
        let held: Vec<_> = (0..5).map(|_| capped.admit(ip("10.9.9.9"))).collect();
        assert!(held.iter().all(|h| matches!(h, Admission::Admitted(_))));
        assert!(matches!(capped.admit(None), Admission::Admitted(_)));
        assert_eq!(capped.open("10.9.9.9".parse().unwrap()), 0);
        let uncapped = limit(0, "10.9.9.9");
        let held: Vec<_> = (0..5).map(|_| uncapped.admit(ip("10.0.0.1"))).collect();
        assert!(held.iter().all(|h| matches!(h, Admission::Admitted(_))));
    }

    #[test]
    fn exempts_an_ipv6_proxy_by_its_own_address_not_by_its_slash_64() {
        let proxy = limit(1, "2001:db8:1:2::10");
        let held: Vec<_> = (0..5)
            .map(|_| proxy.admit(ip("2001:db8:1:2::10")))
            .collect();
        assert!(held.iter().all(|h| matches!(h, Admission::Admitted(_))));
        // Its neighbours in the same /64 are not proxies: capped as one address.
        let _neighbour = proxy.admit(ip("2001:db8:1:2::11"));
        assert!(matches!(
            proxy.admit(ip("2001:db8:1:2::12")),
            Admission::Refused
        ));
        // A proxy list holding the /64's base address exempts only that address.
        let base = limit(1, "2001:db8:1:3::");
        let _first = base.admit(ip("2001:db8:1:3::7"));
        assert!(matches!(
            base.admit(ip("2001:db8:1:3::8")),
            Admission::Refused
        ));
    }

    #[test]
    fn forgets_an_address_once_its_last_connection_closes() {
        let limit = limit(3, "10.9.9.9");
        let held = limit.admit(ip("10.0.0.1"));
        assert_eq!(limit.open("10.0.0.1".parse().unwrap()), 1);
        drop(held);
        assert_eq!(limit.open("10.0.0.1".parse().unwrap()), 0);
        assert!(limit.open.lock().unwrap().is_empty());
    }
}
