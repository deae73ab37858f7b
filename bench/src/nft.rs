//! The kernel baseline of the forwarding benchmarks: an nftables DNAT rule
//! in the load balancer's namespace spreading a VIP over the targets
//! (`numgen inc`, what an operator without lb would write); the table is
//! deleted on drop.
use std::ffi::OsStr;
use std::net::Ipv4Addr;

use lb_tests::netns;
use lb_tests::topology::{Topology, target4};

const TABLE: &str = "lbbench";

pub struct NftDnat {
    ns: String,
}

impl NftDnat {
    /// `vip:vip_port/proto` (`"tcp"` or `"udp"`) to `targets` targets on
    /// `target_port`.
    pub fn install(
        topo: &Topology,
        proto: &str,
        vip: Ipv4Addr,
        vip_port: u16,
        targets: usize,
        target_port: u16,
    ) -> Self {
        let map: Vec<String> = (1..=targets)
            .map(|i| format!("{} : {} . {target_port}", i - 1, target4(i)))
            .collect();
        let rules = format!(
            "table ip {TABLE} {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    ip daddr {vip} {proto} dport {vip_port} dnat ip to numgen inc mod {targets} map {{ {} }}\n  }}\n}}\n",
            map.join(", ")
        );
        let path = topo.run_dir().join("bench.nft");
        std::fs::write(&path, rules).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        let out = topo
            .lb
            .exec(&[OsStr::new("nft"), OsStr::new("-f"), path.as_os_str()]);
        assert!(
            out.status.success(),
            "nft -f: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            ns: topo.lb.name().to_owned(),
        }
    }
}

impl Drop for NftDnat {
    fn drop(&mut self) {
        let out = netns::try_run(
            "ip",
            [
                "netns", "exec", &self.ns, "nft", "delete", "table", "ip", TABLE,
            ],
        );
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "cleanup: nft delete table: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("cleanup: cannot run nft: {e}"),
        }
    }
}
