//! What the router forwards, counted by nftables in its forward hook: the
//! outside view of where flows went.
//!
//! - `syn_h<i>`: TCP SYNs (without ACK) to the VIPs' TCP port sent to host
//!   `i`: new TCP connections that landed on that host.
//! - `udp_h<i>`: datagrams to the VIPs' UDP port sent to host `i`.
//! - `leak`: packets from a VIP to the client sent to any host: a target's
//!   reply that crossed a balancer host (must stay 0 in dsr mode). The
//!   answers to the hosts' own health probes, which go through the VIP,
//!   come from the VIP to the host's address, by design: not counted.
//! - `direct`: packets from a VIP sent to the client: replies that took
//!   the direct path.
use std::collections::BTreeMap;
use std::path::Path;

use crate::netns::Netns;
use crate::topology::{VIP_TCP_PORT, VIP_UDP_PORT, VIP4, VIP6};

use super::edge::{CLIENT4, CLIENT6, ROUTER_CLIENT_IF};
use super::router_if;

/// The nftables table (family inet) holding the counters.
const TABLE: &str = "lab";

/// A snapshot of every counter (packets), by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts(pub BTreeMap<String, u64>);

impl Counts {
    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// `self - earlier`, per counter.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(earlier.get(k))))
                .collect(),
        )
    }

    /// `syn_h<i>` (or `udp_h<i>`) for hosts 1..=`hosts`.
    pub fn per_host(&self, prefix: &str, hosts: usize) -> Vec<u64> {
        (1..=hosts)
            .map(|i| self.get(&format!("{prefix}_h{i}")))
            .collect()
    }
}

/// Installs the counters in `router` (ruleset written to `dir`).
pub fn install(router: &Netns, hosts: usize, dir: &Path) {
    let mut names = vec!["leak".to_owned(), "direct".to_owned()];
    let mut rules = Vec::new();
    for i in 1..=hosts {
        let dev = router_if(i);
        names.extend([format!("syn_h{i}"), format!("udp_h{i}")]);
        rules.push(format!(
            "oifname \"{dev}\" tcp dport {VIP_TCP_PORT} tcp flags & (syn | ack) == syn counter name \"syn_h{i}\""
        ));
        rules.push(format!(
            "oifname \"{dev}\" udp dport {VIP_UDP_PORT} counter name \"udp_h{i}\""
        ));
    }
    rules.extend([
        format!("oifname \"r-h*\" ip saddr {VIP4} ip daddr {CLIENT4} counter name \"leak\""),
        format!("oifname \"r-h*\" ip6 saddr {VIP6} ip6 daddr {CLIENT6} counter name \"leak\""),
        format!("oifname \"{ROUTER_CLIENT_IF}\" ip saddr {VIP4} counter name \"direct\""),
        format!("oifname \"{ROUTER_CLIENT_IF}\" ip6 saddr {VIP6} counter name \"direct\""),
    ]);
    let counters: Vec<String> = names
        .iter()
        .map(|n| format!("  counter {n} {{}}"))
        .collect();
    let rules: Vec<String> = rules.iter().map(|r| format!("    {r}")).collect();
    let text = format!(
        "table inet {TABLE} {{\n{}\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n{}\n  }}\n}}\n",
        counters.join("\n"),
        rules.join("\n")
    );
    let path = dir.join("router.nft");
    std::fs::write(&path, text).expect("write router.nft");
    router.exec(&["nft", "-f", &path.display().to_string()]);
}

/// Reads every counter of the router's table.
pub fn read(router: &Netns) -> Counts {
    let out = router.exec(&["nft", "-j", "list", "counters", "table", "inet", TABLE]);
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("nft -j list counters: JSON");
    let mut counts = BTreeMap::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        let c = &item["counter"];
        if let (Some(name), Some(packets)) = (c["name"].as_str(), c["packets"].as_u64()) {
            counts.insert(name.to_owned(), packets);
        }
    }
    Counts(counts)
}
