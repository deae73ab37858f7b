//! The XDP programs of the cases that are not the load balancer, from
//! lb-bench-ebpf: the sinks on the targets and the trivial forwarders.
use aya::Ebpf;
use aya::maps::{Array, PerCpuArray};
use aya::programs::XdpMode;

use lb_tests::netns::{self, Netns};
use lb_tests::topology::LB_CLIENT_IF;
use lb_tests::trafficgen::{load_bench, xdp_mut};

/// Mirrors `RedirectTo` in lb-bench-ebpf.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RedirectTo {
    pub ifindex: u32,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
}
// SAFETY: repr(C), 4 + 6 + 6 bytes, no implicit padding.
unsafe impl aya::Pod for RedirectTo {}

/// Runs `f` on a thread in namespace `ns` (interface names resolve there).
pub fn in_ns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    netns::in_netns(ns.name(), f)
}

/// `bench_sink` attached (driver mode) to a target's veth; detached on drop.
pub struct Sink {
    ebpf: Ebpf,
}

impl Sink {
    pub fn attach(ns: &Netns, dev: &'static str) -> Self {
        let ebpf = in_ns(ns, move || {
            let mut ebpf = load_bench(&["bench_sink"]);
            xdp_mut(&mut ebpf, "bench_sink")
                .attach(dev, XdpMode::Driver)
                .unwrap_or_else(|e| panic!("attaching bench_sink to {dev}: {e:?}"));
            ebpf
        });
        Self { ebpf }
    }

    pub fn count(&self) -> u64 {
        let map: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("SINK").expect("SINK map")).expect("SINK");
        map.get(&0, 0).expect("read SINK").iter().sum()
    }
}

/// `bench_redirect` on `lb-c`; detached on drop.
pub struct Redirect {
    _ebpf: Ebpf,
}

impl Redirect {
    pub fn attach(lb: &Netns, to: RedirectTo) -> Self {
        let ebpf = in_ns(lb, move || {
            let mut ebpf = load_bench(&["bench_redirect"]);
            let mut map: Array<_, RedirectTo> =
                Array::try_from(ebpf.map_mut("REDIRECT").expect("REDIRECT map")).expect("REDIRECT");
            map.set(0, to, 0).expect("write REDIRECT");
            xdp_mut(&mut ebpf, "bench_redirect")
                .attach(LB_CLIENT_IF, XdpMode::Driver)
                .unwrap_or_else(|e| panic!("attaching bench_redirect to {LB_CLIENT_IF}: {e:?}"));
            ebpf
        });
        Self { _ebpf: ebpf }
    }
}

