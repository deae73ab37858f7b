//! The XDP programs of the cases that are not the load balancer, from
//! lb-bench-ebpf: the sinks on the targets and the trivial forwarders.
use aya::Ebpf;
use aya::maps::{Array, PerCpuArray};
use aya::programs::XdpMode;

use lb_tests::netns::{self, Netns};
use lb_tests::topology::LB_CLIENT_IF;
use lb_tests::trafficgen::{load_bench, load_bench_sized, xdp_mut};

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

/// Mirrors `OuterHeader` in lb-bench-ebpf: the outer IPv4 header
/// `bench_encap` writes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OuterHeader {
    pub bytes: [u8; 20],
}
// SAFETY: repr(C), 20 bytes, no padding.
unsafe impl aya::Pod for OuterHeader {}

/// Mirrors `StateShape` in lb-bench-ebpf: where the per-flow state
/// forwarder reads.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StateShape {
    pub mask: u32,
    pub half_bits: u32,
    pub per_line_bits: u32,
}
// SAFETY: repr(C), three u32, no padding.
unsafe impl aya::Pod for StateShape {}

/// The size of `Work::State`'s entry per flow: a whole 64-byte line (as
/// lb's connection table), or 2 or 4 entries packed in a line (what a
/// table of compact entries would read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateEntry {
    Line,
    Half,
    Quarter,
}

impl StateEntry {
    /// From its size in bytes: 64, 32 or 16.
    pub fn of_bytes(bytes: u32) -> Option<Self> {
        match bytes {
            64 => Some(Self::Line),
            32 => Some(Self::Half),
            16 => Some(Self::Quarter),
            _ => None,
        }
    }

    pub fn bytes(self) -> u32 {
        64 >> self.per_line_bits()
    }

    /// log2 of the entries per line (`StateShape::per_line_bits`).
    fn per_line_bits(self) -> u32 {
        match self {
            Self::Line => 0,
            Self::Half => 1,
            Self::Quarter => 2,
        }
    }
}

/// Targets the spreading forwarders send to: lb-bench-ebpf's `SPREAD`.
pub const SPREAD: usize = 3;

/// What a trivial forwarder does to a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// MAC rewrite and redirect (`bench_redirect`).
    Plain,
    /// The same plus the target's fixed outer IPv4 header (`bench_encap`).
    Encap,
    /// `Plain` plus a read of the flow's entry of per-flow state, in a
    /// table of one entry per flow (`bench_redirect_spread_state`):
    /// spreading only.
    State,
}

/// A target of a trivial forwarder: where frames go, and the outer header
/// `Work::Encap` puts on them for it (unread by `Work::Plain`).
#[derive(Clone, Copy)]
pub struct Target {
    pub to: RedirectTo,
    pub outer: OuterHeader,
}

/// A trivial forwarder on `lb-c`, detached on drop: `bench_redirect` or
/// `bench_encap` to one target, or their `_spread` variants, which spread
/// flows over [`SPREAD`] targets by source port.
pub struct Redirect {
    _ebpf: Ebpf,
}

impl Redirect {
    /// Attaches the forwarder doing `work` over `targets`: one, or
    /// [`SPREAD`] (anything else would leave `REDIRECT` entries empty, and
    /// their share of the frames lost). `flows`: how many the traffic
    /// cycles through (a power of two), which `Work::State` keeps an entry
    /// of `state` each for.
    pub fn attach(
        lb: &Netns,
        work: Work,
        targets: Vec<Target>,
        flows: u32,
        state: StateEntry,
    ) -> Self {
        let spread = match targets.len() {
            1 => false,
            SPREAD => true,
            n => panic!("a trivial forwarder sends to 1 or {SPREAD} targets, not {n}"),
        };
        let prog = match (work, spread) {
            (Work::Plain, false) => "bench_redirect",
            (Work::Plain, true) => "bench_redirect_spread",
            (Work::Encap, false) => "bench_encap",
            (Work::Encap, true) => "bench_encap_spread",
            (Work::State, true) => "bench_redirect_spread_state",
            (Work::State, false) => panic!("the per-flow state forwarder spreads"),
        };
        assert!(flows.is_power_of_two(), "flows must be a power of two");
        let ebpf = in_ns(lb, move || {
            let mut ebpf = if work == Work::State {
                let per_line_bits = state.per_line_bits();
                let lines = (flows >> per_line_bits).max(1);
                let mut ebpf = load_bench_sized(&[prog], &[("STATE", lines)]);
                let mut shape: Array<_, StateShape> =
                    Array::try_from(ebpf.map_mut("STATE_SHAPE").expect("STATE_SHAPE map"))
                        .expect("STATE_SHAPE");
                let shape_of = StateShape {
                    mask: flows - 1,
                    // Rounded up: at 2 flows (k = 1) a shift of 0 would
                    // xor every number to 0.
                    half_bits: flows.trailing_zeros().div_ceil(2),
                    per_line_bits,
                };
                shape.set(0, shape_of, 0).expect("write STATE_SHAPE");
                ebpf
            } else {
                load_bench(&[prog])
            };
            let mut map: Array<_, RedirectTo> =
                Array::try_from(ebpf.map_mut("REDIRECT").expect("REDIRECT map")).expect("REDIRECT");
            for (i, t) in targets.iter().enumerate() {
                map.set(i as u32, t.to, 0).expect("write REDIRECT");
            }
            let mut map: Array<_, OuterHeader> =
                Array::try_from(ebpf.map_mut("ENCAP").expect("ENCAP map")).expect("ENCAP");
            for (i, t) in targets.iter().enumerate() {
                map.set(i as u32, t.outer, 0).expect("write ENCAP");
            }
            xdp_mut(&mut ebpf, prog)
                .attach(LB_CLIENT_IF, XdpMode::Driver)
                .unwrap_or_else(|e| panic!("attaching {prog} to {LB_CLIENT_IF}: {e:?}"));
            ebpf
        });
        Self { _ebpf: ebpf }
    }
}
