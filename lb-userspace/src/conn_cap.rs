//! The connection caps of a listener the daemon serves (`max_connections`
//! and `max_connections_per_client`, as HAProxy's `maxconn` and its
//! per-source limits): a connection beyond either is refused as it is
//! accepted, before a byte of it is read and before a worker or TLS gets
//! involved: closed with a reset (`SO_LINGER` 0: no FIN exchange and no
//! `TIME_WAIT` kept for it), and counted. The counts live as long as the
//! listener's accept loop; a reload changes the caps, which apply to the
//! next connections (open ones are never cut by a lower cap).
use std::{collections::HashMap, net::IpAddr, sync::Arc};

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
    /// Client connections open at once from one address.
    pub per_client: u32,
}

impl Caps {
    /// The caps of listener `l`.
    pub fn of(l: &Listener) -> Self {
        Self {
            max: l.max_connections(),
            per_client: l.max_connections_per_client(),
        }
    }
}

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

/// The connections a listener holds, in all and by client address.
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
    client: IpAddr,
}

impl Counts {
    /// A place for a connection from `client` within `caps`, or the cap
    /// it would exceed. (An IPv4 client on a dual-stack socket counts as
    /// its IPv4 address.)
    pub fn admit(&self, client: IpAddr, caps: Caps) -> Result<Slot, Refused> {
        let client = client.to_canonical();
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
        };
        assert_eq!(
            counts.admit(ip("10.0.0.4"), lower).unwrap_err(),
            Refused::Listener
        );
        assert_eq!(counts.open(), 3);
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
