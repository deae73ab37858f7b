//! The connection caps of a listener the daemon serves (`max_connections`
//! and `max_connections_per_client`, as HAProxy's `maxconn` and its
//! per-source limits): a connection beyond either is refused as it is
//! accepted, before a byte of it is read and before a worker or TLS gets
//! involved: closed with a reset (`SO_LINGER` 0: no FIN exchange and no
//! `TIME_WAIT` kept for it), and counted. The counts live as long as the
//! listener's accept loop; a reload changes the caps, which apply to the
//! next connections (open ones are never cut by a lower cap). An IPv6
//! client is its address's first `client_ipv6_prefix` bits (a /64 by
//! default): a host may use every address of its /64 (RFC 8273 gives each
//! host one of its own), and a cap per address would let it open
//! `max_connections_per_client` connections from each of them. Hosts that
//! share a /64 (one LAN) share its count, as IPv4 hosts behind one NAT do.
//! An address of the NAT64 prefix `64:ff9b::/96` (RFC 6052) counts as the
//! IPv4 client it embeds: by prefix, every client behind a NAT64
//! translator would share that prefix's one /64.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use parking_lot::Mutex;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use tokio::net::TcpStream;
use tracing::debug;

use crate::config::Listener;

/// A listener's caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Client connections open at once.
    pub max: u32,
    /// Client connections open at once from one client.
    pub per_client: u32,
    /// An IPv6 client: the first this many bits of its address (0..=128;
    /// more counts as 128). The config allows 32..=128.
    pub ipv6_prefix: u8,
}

impl Caps {
    /// The caps of listener `l`.
    pub fn of(l: &Listener) -> Self {
        Self {
            max: l.max_connections(),
            per_client: l.max_connections_per_client(),
            ipv6_prefix: l.client_ipv6_prefix(),
        }
    }

    /// The client a connection from `addr` counts against: an IPv4
    /// address (also when it comes through a dual-stack socket or a NAT64
    /// translator), or an IPv6 one's first `ipv6_prefix` bits.
    fn client(self, addr: IpAddr) -> IpAddr {
        match addr.to_canonical() {
            IpAddr::V6(a) if a.to_bits() >> 32 == NAT64 >> 32 => {
                IpAddr::V4(Ipv4Addr::from_bits(a.to_bits() as u32))
            }
            IpAddr::V6(a) => {
                let host_bits = 128u32.saturating_sub(u32::from(self.ipv6_prefix));
                let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from_bits(a.to_bits() & mask))
            }
            v4 => v4,
        }
    }
}

/// The NAT64 well-known prefix `64:ff9b::/96` (RFC 6052); its last 32
/// bits are the IPv4 address.
const NAT64: u128 = 0x0064_ff9b_0000_0000_0000_0000_0000_0000;

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections`.
    Listener,
    /// `max_connections_per_client`.
    Client,
}

impl Refused {
    const ALL: [Refused; 2] = [Refused::Listener, Refused::Client];

    /// The `reason` label: the key that refused it.
    pub const fn label(self) -> &'static str {
        match self {
            Refused::Listener => "max_connections",
            Refused::Client => "max_connections_per_client",
        }
    }
}

/// The connections a listener holds, in all and by client ([`Caps::client`]).
#[derive(Debug, Default)]
pub struct Counts(Arc<Mutex<Open>>);

#[derive(Debug, Default)]
struct Open {
    all: u32,
    by_client: HashMap<IpAddr, u32>,
}

/// One admitted connection's place; dropping it (when the connection
/// ends) frees it.
#[derive(Debug)]
pub struct Slot {
    open: Arc<Mutex<Open>>,
    /// The client it was counted against (a reload may change the prefix
    /// before it ends).
    client: IpAddr,
}

impl Counts {
    /// A place for a connection from `addr` within `caps`, or the cap it
    /// would exceed (its client: [`Caps::client`]).
    pub fn admit(&self, addr: IpAddr, caps: Caps) -> Result<Slot, Refused> {
        let client = caps.client(addr);
        let mut open = self.0.lock();
        if open.all >= caps.max {
            return Err(Refused::Listener);
        }
        let mine = open.by_client.get(&client).copied().unwrap_or(0);
        if mine >= caps.per_client {
            return Err(Refused::Client);
        }
        open.all += 1;
        open.by_client.insert(client, mine + 1);
        Ok(Slot {
            open: Arc::clone(&self.0),
            client,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> u32 {
        self.0.lock().all
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock();
        open.all = open.all.saturating_sub(1);
        if let Some(n) = open.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.by_client.remove(&self.client);
            }
        }
    }
}

/// Closes a refused connection with a reset.
pub fn refuse(stream: TcpStream) {
    if let Err(e) = stream.set_zero_linger() {
        // A plain close then: a FIN instead of a reset.
        debug!("SO_LINGER on a refused connection: {e}");
    }
    drop(stream);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub listener: String,
    /// [`Refused::label`].
    pub reason: &'static str,
}

/// The refusal counters of every listener of one kind.
pub type RefusedFamily = Family<RefusedLabels, Counter>;

/// One listener's refusal counters, looked up once.
#[derive(Debug, Clone)]
pub struct RefusedSeries([Counter; 2]);

impl RefusedSeries {
    pub fn new(family: &RefusedFamily, listener: &str) -> Self {
        Self(Refused::ALL.map(|reason| {
            family
                .get_or_create(&RefusedLabels {
                    listener: listener.to_owned(),
                    reason: reason.label(),
                })
                .clone()
        }))
    }

    /// One connection refused by `reason`.
    pub fn count(&self, reason: Refused) {
        self.0[reason as usize].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: Caps = Caps {
        max: 3,
        per_client: 2,
        ipv6_prefix: 64,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn caps_count_all_and_per_client_and_slots_free_them() {
        let counts = Counts::default();
        let a1 = counts.admit(ip("10.0.0.1"), CAPS).expect("first of a");
        let _a2 = counts.admit(ip("10.0.0.1"), CAPS).expect("second of a");
        assert_eq!(
            counts.admit(ip("10.0.0.1"), CAPS).unwrap_err(),
            Refused::Client
        );
        // The same address through a dual-stack socket.
        assert_eq!(
            counts.admit(ip("::ffff:10.0.0.1"), CAPS).unwrap_err(),
            Refused::Client
        );
        let _b = counts.admit(ip("10.0.0.2"), CAPS).expect("b");
        assert_eq!(
            counts.admit(ip("10.0.0.3"), CAPS).unwrap_err(),
            Refused::Listener
        );
        assert_eq!(counts.open(), 3);
        drop(a1);
        assert_eq!(counts.open(), 2);
        let _c = counts.admit(ip("10.0.0.3"), CAPS).expect("c after a left");
        // A lower cap (a reload) refuses new ones, keeps the open ones.
        let lower = Caps {
            max: 1,
            per_client: 1,
            ..CAPS
        };
        assert_eq!(
            counts.admit(ip("10.0.0.4"), lower).unwrap_err(),
            Refused::Listener
        );
        assert_eq!(counts.open(), 3);
    }

    /// IPv6 clients are their /64 (or the prefix set): another address of
    /// the same host is no new client, another /64 is.
    #[test]
    fn ipv6_clients_count_by_their_prefix() {
        let counts = Counts::default();
        let caps = Caps { max: 10, ..CAPS };
        let _a = counts.admit(ip("2001:db8:0:1::a"), caps).expect("a");
        let b = counts.admit(ip("2001:db8:0:1:ffff::b"), caps).expect("b");
        assert_eq!(
            counts.admit(ip("2001:db8:0:1::c"), caps).unwrap_err(),
            Refused::Client,
            "a third address of the same /64"
        );
        let _other = counts
            .admit(ip("2001:db8:0:2::a"), caps)
            .expect("another /64");
        // By address (/128), each address is a client of its own.
        let whole = Caps {
            ipv6_prefix: 128,
            ..caps
        };
        let _c = counts
            .admit(ip("2001:db8:0:1::c"), whole)
            .expect("c by address");
        // A /48 takes in its /64s.
        let wide = Caps {
            ipv6_prefix: 48,
            ..caps
        };
        let _e = counts.admit(ip("2001:db8:1:1::1"), wide).expect("e");
        let _f = counts.admit(ip("2001:db8:1:2::1"), wide).expect("f");
        assert_eq!(
            counts.admit(ip("2001:db8:1:3::1"), wide).unwrap_err(),
            Refused::Client
        );
        // A slot frees the client it was counted against, whatever the
        // caps are now: c fills its /128, b leaves its /64.
        let _c2 = counts
            .admit(ip("2001:db8:0:1::c"), whole)
            .expect("c's second");
        drop(b);
        let _d = counts
            .admit(ip("2001:db8:0:1::d"), caps)
            .expect("b's place in the /64");
        assert_eq!(
            counts.admit(ip("2001:db8:0:1::c"), whole).unwrap_err(),
            Refused::Client,
            "c's /128 count is kept"
        );
        assert_eq!(
            counts.admit(ip("2001:db8:0:1::e"), caps).unwrap_err(),
            Refused::Client,
            "the /64 is full again"
        );
        assert_eq!(counts.open(), 7);
    }

    /// A NAT64 translator's addresses are the IPv4 clients they embed,
    /// not one /64 for all of IPv4.
    #[test]
    fn nat64_clients_count_as_their_ipv4_address() {
        let counts = Counts::default();
        let caps = Caps { max: 10, ..CAPS };
        let _a1 = counts.admit(ip("64:ff9b::10.0.0.1"), caps).expect("a1");
        let _a2 = counts.admit(ip("10.0.0.1"), caps).expect("a2, natively");
        assert_eq!(
            counts.admit(ip("64:ff9b::10.0.0.1"), caps).unwrap_err(),
            Refused::Client
        );
        let _b = counts.admit(ip("64:ff9b::10.0.0.2"), caps).expect("b");
        let _c = counts.admit(ip("64:ff9b::10.0.0.3"), caps).expect("c");
    }

    #[test]
    fn refusals_are_counted_by_reason() {
        let family = RefusedFamily::default();
        let series = RefusedSeries::new(&family, "web");
        series.count(Refused::Client);
        series.count(Refused::Client);
        series.count(Refused::Listener);
        let get = |reason| {
            family
                .get_or_create(&RefusedLabels {
                    listener: "web".into(),
                    reason,
                })
                .get()
        };
        assert_eq!(
            (get("max_connections"), get("max_connections_per_client")),
            (1, 2)
        );
    }
}
