//! [`Routing`] over rtnetlink (the rust-netlink project's crate): the
//! netlink requests `ip route add|del|show table T proto P` and `ip link
//! show` would make, without running iproute2.
//!
//! The socket has `NETLINK_GET_STRICT_CHK` on, so route dumps are filtered
//! by the kernel (table, protocol, type): a host holding a full BGP table in
//! its main table costs nothing here. The results are filtered again on our
//! side all the same, for kernels that ignore the filter.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use futures_util::TryStreamExt;
use rtnetlink::{
    Handle, RouteMessageBuilder,
    packet_route::{
        link::{LinkAttribute, LinkXdp, XdpAttached},
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType},
    },
};

use super::routing::{Owner, Routing, RoutingError, kernel_metric};

/// The kernel's routing tables and links, through one netlink socket.
pub struct KernelRouting {
    handle: Handle,
}

impl KernelRouting {
    /// Opens the socket; its connection runs as a task of the current tokio
    /// runtime and ends when this is dropped.
    pub fn open() -> Result<Self, RoutingError> {
        let (connection, handle, _) =
            rtnetlink::new_connection_with_strict_check().map_err(RoutingError::Socket)?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    async fn dump(&self, owner: Owner, v6: bool) -> Result<Vec<RouteMessage>, rtnetlink::Error> {
        let filter = if v6 {
            RouteMessageBuilder::<Ipv6Addr>::new().build()
        } else {
            RouteMessageBuilder::<Ipv4Addr>::new().build()
        };
        let filter = owned(filter, owner);
        self.handle
            .route()
            .get(filter)
            .execute()
            .try_collect()
            .await
    }
}

/// `message` made a blackhole route of `owner`.
fn owned(message: RouteMessage, owner: Owner) -> RouteMessage {
    let mut m = message;
    m.header.protocol = RouteProtocol::from(owner.protocol);
    m.header.kind = RouteType::BlackHole;
    set_table(&mut m, owner.table);
    m
}

fn set_table(m: &mut RouteMessage, table: u32) {
    m.attributes
        .retain(|a| !matches!(a, RouteAttribute::Table(_)));
    // Tables above 255 only fit the attribute; the header then says
    // RT_TABLE_COMPAT (252), as iproute2 does.
    m.header.table = u8::try_from(table).unwrap_or(252);
    m.attributes.push(RouteAttribute::Table(table));
}

/// The route `ip route add blackhole VIP/len table T proto P metric M`
/// sends.
fn route(owner: Owner, vip: IpAddr, metric: u32) -> RouteMessage {
    let m = match vip {
        IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(a, 32)
            .build(),
        IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(a, 128)
            .build(),
    };
    let mut m = owned(m, owner);
    m.attributes.push(RouteAttribute::Priority(metric));
    m
}

fn table_of(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

/// (VIP, metric) of a dumped route if it is one of `owner`'s host routes.
fn vip_of(m: &RouteMessage, owner: Owner) -> Option<(IpAddr, u32)> {
    if table_of(m) != owner.table
        || u8::from(m.header.protocol) != owner.protocol
        || m.header.kind != RouteType::BlackHole
    {
        return None;
    }
    let vip = m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    })?;
    let full = if vip.is_ipv4() { 32 } else { 128 };
    if m.header.destination_prefix_length != full {
        return None;
    }
    let metric = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Priority(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0);
    Some((vip, metric))
}

/// The errno of a netlink error answer.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

impl Routing for KernelRouting {
    async fn list(&mut self, owner: Owner) -> Result<BTreeMap<IpAddr, u32>, RoutingError> {
        let mut out = BTreeMap::new();
        for v6 in [false, true] {
            let routes = self.dump(owner, v6).await.map_err(|e| RoutingError::List {
                owner,
                message: e.to_string(),
            })?;
            out.extend(routes.iter().filter_map(|m| vip_of(m, owner)));
        }
        Ok(out)
    }

    async fn add(&mut self, owner: Owner, vip: IpAddr, metric: u32) -> Result<(), RoutingError> {
        let m = route(owner, vip, metric);
        match self.handle.route().add(m).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(RoutingError::Add {
                vip,
                owner,
                message: e.to_string(),
            }),
        }
    }

    async fn delete(&mut self, owner: Owner, vip: IpAddr, metric: u32) -> Result<(), RoutingError> {
        let mut m = route(owner, vip, kernel_metric(vip, metric));
        // Any scope, as `ip route del` asks.
        m.header.scope = RouteScope::NoWhere;
        match self.handle.route().del(m).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(RoutingError::Delete {
                vip,
                owner,
                message: e.to_string(),
            }),
        }
    }

    async fn xdp_attached(&mut self, interface: &str) -> Result<bool, RoutingError> {
        let link = self
            .handle
            .link()
            .get()
            .match_name(interface.to_owned())
            .execute()
            .try_next()
            .await;
        let link = match link {
            Ok(Some(link)) => link,
            Ok(None) => return Ok(false),
            Err(e) if errno(&e) == Some(libc::ENODEV) => return Ok(false),
            Err(e) => {
                return Err(RoutingError::Link {
                    interface: interface.to_owned(),
                    message: e.to_string(),
                });
            }
        };
        Ok(link.attributes.iter().any(|a| match a {
            LinkAttribute::Xdp(xdp) => xdp
                .iter()
                .any(|x| matches!(x, LinkXdp::Attached(mode) if *mode != XdpAttached::None)),
            _ => false,
        }))
    }
}
