//! The probe device, its routes and the policy rules, over rtnetlink
//! (the requests `ip link add lb-probe type ifb`, `ip route replace
//! default dev lb-probe table T` and `ip rule add fwmark M/MASK lookup T
//! pref P` would make). Each step looks before it changes, so running it
//! again (a restart, a reload) changes nothing.
use std::net::{Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use lb_common::probe::{MARK_BASE, MARK_MASK};
use rtnetlink::{
    Handle, IpVersion, LinkIfb, RouteMessageBuilder,
    packet_route::{
        link::LinkAttribute,
        rule::{RuleAction, RuleAttribute, RuleMessage},
    },
};

use super::{DEVICE, DEVICE_MTU, ProbePathError, RULE_PRIORITY, TABLE};

pub(super) fn nl(what: &'static str) -> impl Fn(rtnetlink::Error) -> ProbePathError {
    move |e| ProbePathError::Netlink {
        what,
        reason: e.to_string(),
    }
}

/// The device's index, if it exists.
pub(super) async fn device_index(handle: &Handle) -> Result<Option<u32>, ProbePathError> {
    let mut links = handle.link().get().match_name(DEVICE.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        // No such device: the kernel answers ENODEV.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(nl("looking up the probe device")(e)),
    }
}

/// Creates the device (an IFB: no neighbours, and whatever the program
/// does not redirect is dropped), up, with its MTU; returns its index.
async fn ensure_device(handle: &Handle) -> Result<u32, ProbePathError> {
    if device_index(handle).await?.is_none() {
        handle
            .link()
            .add(LinkIfb::new(DEVICE).mtu(DEVICE_MTU).up().build())
            .execute()
            .await
            .map_err(nl("creating the probe device"))?;
    }
    let index = device_index(handle)
        .await?
        .ok_or_else(|| ProbePathError::Netlink {
            what: "creating the probe device",
            reason: "it is not there after creation".into(),
        })?;
    // Up and at its MTU even when found (someone may have set it down).
    let mut set = rtnetlink::LinkUnspec::new_with_index(index)
        .mtu(DEVICE_MTU)
        .up()
        .build();
    set.attributes
        .retain(|a| !matches!(a, LinkAttribute::IfName(_)));
    handle
        .link()
        .set(set)
        .execute()
        .await
        .map_err(nl("setting the probe device up"))?;
    Ok(index)
}

/// The default routes of the probe table through the device.
async fn ensure_routes(handle: &Handle, index: u32) -> Result<(), ProbePathError> {
    let v4 = RouteMessageBuilder::<Ipv4Addr>::new()
        .table_id(TABLE)
        .output_interface(index)
        .build();
    let v6 = RouteMessageBuilder::<Ipv6Addr>::new()
        .table_id(TABLE)
        .output_interface(index)
        .build();
    for route in [v4, v6] {
        handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(nl("adding the probe table's default route"))?;
    }
    Ok(())
}

/// Whether `rule` is ours: our priority, table, mark and mask.
fn is_ours(rule: &RuleMessage) -> bool {
    let has = |want: &RuleAttribute| rule.attributes.iter().any(|a| a == want);
    has(&RuleAttribute::Priority(RULE_PRIORITY))
        && has(&RuleAttribute::FwMark(MARK_BASE))
        && has(&RuleAttribute::FwMask(MARK_MASK))
        && (has(&RuleAttribute::Table(TABLE)) || rule.header.table as u32 == TABLE)
}

async fn our_rules(handle: &Handle, v: IpVersion) -> Result<Vec<RuleMessage>, ProbePathError> {
    let rules: Vec<RuleMessage> = handle
        .rule()
        .get(v)
        .execute()
        .try_collect()
        .await
        .map_err(nl("listing the policy rules"))?;
    Ok(rules.into_iter().filter(is_ours).collect())
}

/// `fwmark MARK_BASE/MARK_MASK lookup TABLE pref RULE_PRIORITY`, once per
/// family.
async fn ensure_rules(handle: &Handle) -> Result<(), ProbePathError> {
    for v in [IpVersion::V4, IpVersion::V6] {
        if !our_rules(handle, v.clone()).await?.is_empty() {
            continue;
        }
        let mut add = handle
            .rule()
            .add()
            .table_id(TABLE)
            .priority(RULE_PRIORITY)
            .fw_mark(MARK_BASE)
            .action(RuleAction::ToTable);
        add.message_mut()
            .attributes
            .push(RuleAttribute::FwMask(MARK_MASK));
        let result = match v {
            IpVersion::V4 => add.v4().execute().await,
            IpVersion::V6 => add.v6().execute().await,
        };
        result.map_err(nl("adding the probe rule"))?;
    }
    Ok(())
}

/// Forwarding on the device, so that the program's FIB lookup (as if the
/// probe had arrived there) may route it; nothing else ever arrives on it.
fn enable_forwarding() -> Result<(), ProbePathError> {
    for path in [
        format!("/proc/sys/net/ipv4/conf/{DEVICE}/forwarding"),
        format!("/proc/sys/net/ipv6/conf/{DEVICE}/forwarding"),
    ] {
        std::fs::write(&path, "1").map_err(|e| ProbePathError::Sysctl {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

/// Device, forwarding, routes and rules; returns the device's index.
pub async fn set_up(handle: &Handle) -> Result<u32, ProbePathError> {
    let index = ensure_device(handle).await?;
    enable_forwarding()?;
    ensure_routes(handle, index).await?;
    ensure_rules(handle).await?;
    Ok(index)
}

/// Removes the rules and the device (its routes go with it); what is
/// already gone is fine. Returns what it removed.
pub async fn tear_down(handle: &Handle) -> Result<Vec<String>, ProbePathError> {
    let mut done = Vec::new();
    for (v, family) in [(IpVersion::V4, "IPv4"), (IpVersion::V6, "IPv6")] {
        for rule in our_rules(handle, v.clone()).await? {
            handle
                .rule()
                .del(rule)
                .execute()
                .await
                .map_err(nl("removing the probe rule"))?;
            done.push(format!(
                "removed the {family} probe rule (fwmark {MARK_BASE:#x}/{MARK_MASK:#x} lookup {TABLE})"
            ));
        }
    }
    if let Some(index) = device_index(handle).await? {
        handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(nl("removing the probe device"))?;
        done.push(format!("removed the probe device {DEVICE}"));
    }
    Ok(done)
}
