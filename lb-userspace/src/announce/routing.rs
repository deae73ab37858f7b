//! What the announcer asks of the kernel, as a trait: the VIP routes of
//! one owner (table, protocol) and whether XDP is still attached to an
//! interface. [`super::kernel::KernelRouting`] implements it over rtnetlink;
//! the unit tests use an in-memory fake.
use std::{collections::BTreeMap, fmt, future::Future, net::IpAddr};

/// Whose routes: the table they are in and the protocol number they carry.
/// The daemon only ever lists, adds or deletes routes of its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner {
    pub table: u32,
    pub protocol: u8,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "table {} proto {}", self.table, self.protocol)
    }
}

/// A failed netlink request, naming what it was about.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("opening a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("listing the routes of {owner}: {message}")]
    List { owner: Owner, message: String },
    #[error("adding the route of {vip} ({owner}): {message}")]
    Add {
        vip: IpAddr,
        owner: Owner,
        message: String,
    },
    #[error("deleting the route of {vip} ({owner}): {message}")]
    Delete {
        vip: IpAddr,
        owner: Owner,
        message: String,
    },
    #[error("reading interface {interface}: {message}")]
    Link { interface: String, message: String },
}

/// The kernel's side of announcing: blackhole routes for single addresses
/// (/32, /128) in the owner's table, and XDP attachment per interface.
pub trait Routing {
    /// The owner's routes: VIP -> metric as the kernel holds it.
    fn list(
        &mut self,
        owner: Owner,
    ) -> impl Future<Output = Result<BTreeMap<IpAddr, u32>, RoutingError>> + Send;

    /// Adds the VIP's route; one that exists already is not an error.
    fn add(
        &mut self,
        owner: Owner,
        vip: IpAddr,
        metric: u32,
    ) -> impl Future<Output = Result<(), RoutingError>> + Send;

    /// Deletes the VIP's route of that metric; one already gone is not an
    /// error.
    fn delete(
        &mut self,
        owner: Owner,
        vip: IpAddr,
        metric: u32,
    ) -> impl Future<Output = Result<(), RoutingError>> + Send;

    /// Whether an XDP program is attached to `interface` (false when the
    /// interface is gone).
    fn xdp_attached(
        &mut self,
        interface: &str,
    ) -> impl Future<Output = Result<bool, RoutingError>> + Send;
}

/// The metric the kernel stores for `metric`: IPv6 routes added with 0 get
/// 1024 (`IP6_RT_PRIO_USER`), as with `ip -6 route add`.
pub fn kernel_metric(vip: IpAddr, metric: u32) -> u32 {
    match vip {
        IpAddr::V6(_) if metric == 0 => 1024,
        _ => metric,
    }
}
