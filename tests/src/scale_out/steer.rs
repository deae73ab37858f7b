//! Steering chosen flows through one host, past the router's ECMP: policy
//! routing rules in the router that send the client's packets from a range
//! of source ports to a table whose VIP routes lead to that host only.
//! Moving the rule moves those flows (same 5-tuple) to another host, which
//! is what a router does to some flows whenever a host comes or goes.
use crate::netns::Netns;
use crate::topology::{VIP4, VIP6};

use super::edge::ROUTER_CLIENT_IF;
use super::{host4, host6, router_if};

/// Client source ports the rules match (TCP and UDP).
pub const PORTS: std::ops::RangeInclusive<u16> = 42000..=42999;
/// Priority of the steering rule (before the main table's 32766).
const PREF: &str = "1000";

/// Routing table of host `i`'s steered flows.
fn table(i: usize) -> String {
    (300 + i).to_string()
}

/// Fills one table per host (both VIPs via that host only).
pub fn install(router: &Netns, hosts: usize) {
    for i in 1..=hosts {
        let dev = router_if(i);
        router.ip(&[
            "route",
            "add",
            &format!("{VIP4}/32"),
            "via",
            &host4(i).to_string(),
            "dev",
            &dev,
            "table",
            &table(i),
        ]);
        router.ip(&[
            "-6",
            "route",
            "add",
            &format!("{VIP6}/128"),
            "via",
            &host6(i).to_string(),
            "dev",
            &dev,
            "table",
            &table(i),
        ]);
    }
}

/// Sends the client's flows from [`PORTS`] through host `i` (replacing an
/// earlier steering); `None` hands them back to ECMP.
pub fn through(router: &Netns, host: Option<usize>) {
    let ports = format!("{}-{}", PORTS.start(), PORTS.end());
    for family in ["-4", "-6"] {
        for proto in ["tcp", "udp"] {
            // Absent the first time: the result does not matter.
            let _ = crate::netns::try_run(
                "ip",
                [
                    "-n",
                    router.name(),
                    family,
                    "rule",
                    "del",
                    "pref",
                    PREF,
                    "iif",
                    ROUTER_CLIENT_IF,
                    "ipproto",
                    proto,
                ],
            );
            if let Some(i) = host {
                router.ip(&[
                    family,
                    "rule",
                    "add",
                    "pref",
                    PREF,
                    "iif",
                    ROUTER_CLIENT_IF,
                    "ipproto",
                    proto,
                    "sport",
                    &ports,
                    "lookup",
                    &table(i),
                ]);
            }
        }
    }
}
