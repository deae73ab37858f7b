//! Whether this host's routing lets a dsr target's probes through a VIP
//! leave and their answers come in, asked of the kernel itself.
//!
//! A probe leaves by the probe path's policy rule only if no earlier rule
//! routes the VIP elsewhere: a rule that looks up the blackholes of
//! `[bgp]`'s table for every packet (`ip rule add lookup 100`) catches it
//! first, and its connect fails. Its answer comes from the VIP to the
//! address the probe left from, so the input path validates the VIP as a
//! source: reverse-path filtering (`rp_filter` 1, or 2 without a unicast
//! route to the VIP, which a blackhole is not) or a VIP that is one of
//! this host's own addresses drops it before any socket sees it. Either
//! way every target probed through that VIP turns unhealthy, for a reason
//! (`Target.Timeout`) that points at the targets. So the daemon makes the
//! kernel the same two route lookups (what `ip route get VIP mark M` and
//! `ip route get SRC from VIP iif DEV` ask) and says what they refuse.
use std::net::IpAddr;

use futures_util::TryStreamExt;
use rtnetlink::{
    Handle, RouteMessageBuilder,
    packet_route::{
        link::LinkAttribute,
        route::{RouteAddress, RouteAttribute, RouteMessage},
    },
};

use crate::health::probe::source_toward;

/// What stops the probes of a target through a VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trouble {
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
            Trouble::NoWayOut { reason } => write!(
                f,
                "the probes cannot leave by the probe device ({reason}): a policy rule before \
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
                "this host drops the answers, from the VIP to {to} in by {interface} ({reason}): \
                 reverse-path filtering (net.ipv4.conf.all and .{interface}.rp_filter: 1, or 2 \
                 without a unicast route to the VIP, which a blackhole is not), or the VIP is \
                 an address of this host"
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
    let probe = match route(handle, lookup(vip).mark(mark).build()).await? {
        Err(reason) => return Ok(Some(Trouble::NoWayOut { reason })),
        Ok(probe) => probe,
    };
    match output_interface(&probe) {
        Some(i) if i == device => {}
        other => {
            let name = match other {
                Some(i) => interface_name(handle, i).await,
                None => "no device".to_owned(),
            };
            return Ok(Some(Trouble::NoWayOut {
                reason: format!("it goes to {name}"),
            }));
        }
    }
    // The probe binds to the address toward the target, as the prober
    // does; the answers come back to it.
    let Ok(to) = source_toward(target) else {
        return Ok(None);
    };
    // They come in where a symmetric network delivers them: by the
    // interface the route back to the VIP leaves by (the one strict
    // filtering wants), else by the one toward the target.
    let mut interface = None;
    for toward in [vip, target] {
        if let Ok(r) = route(handle, lookup(toward).build()).await? {
            interface = output_interface(&r);
            if interface.is_some() {
                break;
            }
        }
    }
    let Some(interface) = interface else {
        return Ok(None);
    };
    let mut answer = lookup(to).input_interface(interface).build();
    answer
        .attributes
        .push(RouteAttribute::Source(RouteAddress::from(vip)));
    answer.header.source_prefix_length = full_length(vip);
    Ok(match route(handle, answer).await? {
        Ok(_) => None,
        Err(reason) => Some(Trouble::AnswersRefused {
            to,
            interface: interface_name(handle, interface).await,
            reason,
        }),
    })
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

/// The kernel's answer to a route lookup: the route, or its refusal as
/// an OS error's text (`Invalid argument (os error 22)`); `Err` only when
/// the socket fails.
async fn route(
    handle: &Handle,
    message: RouteMessage,
) -> Result<Result<RouteMessage, String>, rtnetlink::Error> {
    match handle.route().get(message).execute().try_next().await {
        Ok(Some(r)) => Ok(Ok(r)),
        Ok(None) => Ok(Err("no answer".to_owned())),
        Err(rtnetlink::Error::NetlinkError(e)) => Ok(Err(e.raw_code().checked_neg().map_or_else(
            || e.to_string(),
            |code| std::io::Error::from_raw_os_error(code).to_string(),
        ))),
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
