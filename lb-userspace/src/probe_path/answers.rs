//! Whether this host's routing lets a dsr target's probes through a VIP
//! leave and their answers come in, asked of the kernel itself.
//!
//! A probe leaves by the probe path's policy rule only if no earlier rule
//! routes the VIP elsewhere: a rule that looks up the blackholes of
//! `[bgp]`'s table for every packet (`ip rule add lookup 100`) catches it
//! first, and its connect fails; a VIP that is an address of this host
//! keeps it here. Its answer comes from the VIP to the address the probe
//! left from, so the input path validates the VIP as a source, and
//! reverse-path filtering (`rp_filter` 1 while the route to the VIP leaves
//! by another interface, or 2 without a unicast route to the VIP, which a
//! blackhole is not) drops it before any socket sees it. Either way every
//! target probed through that VIP turns unhealthy, for a reason
//! (`Target.Timeout`) that points at the targets. So the daemon makes the
//! kernel the same two route lookups (what `ip route get VIP from SRC mark
//! M ipproto tcp` and `ip route get SRC from VIP iif DEV` ask) and says
//! what they refuse.
use std::net::IpAddr;

use futures_util::TryStreamExt;
use rtnetlink::{
    Handle, RouteMessageBuilder,
    packet_route::{
        link::LinkAttribute,
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteType},
    },
};

use crate::health::probe::source_toward;

/// What stops the probes of a target through a VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trouble {
    /// The VIP is an address of this host: the probes stay here.
    LocalVip,
    /// The probe's route does not go into the probe device: `reason` is
    /// the kernel's refusal, or where it goes instead.
    NoWayOut { reason: String },
    /// The answers, from the VIP to `to` in by `interface`, are refused by
    /// the input path (`reason`: the kernel's answer).
    AnswersRefused {
        to: IpAddr,
        interface: String,
        reason: String,
    },
}

impl std::fmt::Display for Trouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trouble::LocalVip => write!(
                f,
                "the VIP is an address of this host, so the probes stay here and whatever \
                 answers them here decides the targets' health (a dsr balancer does not hold \
                 its VIPs; `address = \"target\"` probes the targets' own addresses)"
            ),
            Trouble::NoWayOut { reason } => write!(
                f,
                "the probes cannot leave by the probe device, and the targets turn unhealthy \
                 ({reason}): a policy rule before \
                 priority {} routes the VIP elsewhere, such as one that looks up the [bgp] \
                 table's blackholes for every packet (limit it to packets that come in: \
                 `not iif lo`, deploy/bird/README.md)",
                super::RULE_PRIORITY
            ),
            Trouble::AnswersRefused {
                to,
                interface,
                reason,
            } => write!(
                f,
                "this host drops the answers, from the VIP to {to} in by {interface}, and the \
                 targets turn unhealthy ({reason}): reverse-path filtering refuses the VIP as \
                 their source (net.ipv4.conf.all and .{interface}.rp_filter: 1 unless the route \
                 to the VIP leaves by {interface}, or 2 without a unicast route to the VIP, \
                 which a blackhole is not; 0, or 2 with such a route, lets them in)"
            ),
        }
    }
}

/// What stops the probes of `target` through `vip`, carrying `mark`, that
/// the probe device (index `device`) should take; `None` when the kernel
/// lets them leave and their answers in, or when there is nothing to ask
/// (no route toward the target, so no source address: the prober fails
/// such probes itself).
pub async fn trouble(
    handle: &Handle,
    device: u32,
    target: IpAddr,
    vip: IpAddr,
    mark: u32,
) -> Result<Option<Trouble>, rtnetlink::Error> {
    // The probe binds to the address toward the target, as the prober
    // does, and its answers come back to it: on a symmetric network, in by
    // the interface toward the target.
    let Ok(from) = source_toward(target) else {
        return Ok(None);
    };
    let toward = route(handle, lookup(target).build()).await?;
    let Some(interface) = toward.ok().and_then(|r| output_interface(&r)) else {
        return Ok(None);
    };
    match probe_trouble(handle, device, from, vip, mark).await? {
        Some(t) => Ok(Some(t)),
        None => answer_trouble(handle, from, vip, interface).await,
    }
}

/// What keeps a probe from `from` to `vip` with `mark` out of the probe
/// device (index `device`): the lookup its connect makes.
async fn probe_trouble(
    handle: &Handle,
    device: u32,
    from: IpAddr,
    vip: IpAddr,
    mark: u32,
) -> Result<Option<Trouble>, rtnetlink::Error> {
    let mut probe = lookup(vip)
        .mark(mark)
        .ip_protocol(libc::IPPROTO_TCP as u8)
        .build();
    set_source(&mut probe, from);
    let probe = match route(handle, probe).await? {
        Err(errno) => {
            return Ok(Some(Trouble::NoWayOut {
                reason: os_error(errno),
            }));
        }
        Ok(probe) => probe,
    };
    if probe.header.kind == RouteType::Local {
        return Ok(Some(Trouble::LocalVip));
    }
    Ok(match output_interface(&probe) {
        Some(i) if i == device => None,
        Some(i) => Some(Trouble::NoWayOut {
            reason: format!("it goes to {}", interface_name(handle, i).await),
        }),
        None => Some(Trouble::NoWayOut {
            reason: "it goes to no device".to_owned(),
        }),
    })
}

/// Whether the input path refuses an answer from `vip` to `to`, in by
/// `interface`: the lookup its arrival makes.
async fn answer_trouble(
    handle: &Handle,
    to: IpAddr,
    vip: IpAddr,
    interface: u32,
) -> Result<Option<Trouble>, rtnetlink::Error> {
    let mut answer = lookup(to).input_interface(interface).build();
    set_source(&mut answer, vip);
    Ok(match route(handle, answer).await? {
        Ok(_) => None,
        // What the input path answers a martian or filtered source.
        Err(errno) if errno == libc::EINVAL || errno == libc::EXDEV => {
            Some(Trouble::AnswersRefused {
                to,
                interface: interface_name(handle, interface).await,
                reason: os_error(errno),
            })
        }
        // Anything else (the interface went away meanwhile) says nothing
        // of the answers.
        Err(_) => None,
    })
}

/// `RTA_SRC` of a lookup: the packet's source address.
fn set_source(m: &mut RouteMessage, source: IpAddr) {
    m.attributes
        .push(RouteAttribute::Source(RouteAddress::from(source)));
    m.header.source_prefix_length = full_length(source);
}

fn os_error(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

/// A route lookup of one address.
fn lookup(to: IpAddr) -> RouteMessageBuilder<IpAddr> {
    RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(to, full_length(to))
        .expect("an address's own family and full length")
}

fn full_length(a: IpAddr) -> u8 {
    if a.is_ipv4() { 32 } else { 128 }
}

/// The kernel's answer to a route lookup: the route, or the errno of its
/// refusal; `Err` only when the socket fails.
async fn route(
    handle: &Handle,
    message: RouteMessage,
) -> Result<Result<RouteMessage, i32>, rtnetlink::Error> {
    match handle.route().get(message).execute().try_next().await {
        Ok(Some(r)) => Ok(Ok(r)),
        // A lookup is answered or refused; an empty answer finds nothing.
        Ok(None) => Ok(Err(libc::ENETUNREACH)),
        Err(rtnetlink::Error::NetlinkError(e)) => Ok(Err(e.raw_code().saturating_neg())),
        Err(e) => Err(e),
    }
}

fn output_interface(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

/// The interface's name, or `#index` when it cannot be read.
async fn interface_name(handle: &Handle, index: u32) -> String {
    let mut links = handle.link().get().match_index(index).execute();
    let name = match links.try_next().await {
        Ok(Some(link)) => link.attributes.into_iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n),
            _ => None,
        }),
        _ => None,
    };
    name.unwrap_or_else(|| format!("#{index}"))
}
