//! Fixture harness of the target-side decapsulation program (`lb_decap`,
//! the `lb-decap` object beside the balancer's): loads it, fills its
//! address maps directly and runs frames through `BPF_PROG_TEST_RUN`. The
//! program looks nothing up in the kernel's tables but for a second
//! chance's chain (socket and FIB lookups: those cases run in the
//! fixture namespace).
use std::net::IpAddr;
use std::path::PathBuf;

use aya::maps::{HashMap, MapData, PerCpuArray};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader};
use lb_common::VipAddrKey;
use lb_common::decap::{self, DecapStat};

use crate::fixture::{self, RunResult};

/// The decapsulation object, beside the balancer's.
pub fn object_path() -> PathBuf {
    let path = fixture::object_path().with_file_name("lb-decap");
    assert!(
        path.is_file(),
        "{} missing: `cargo xtask build` builds it beside the XDP program",
        path.display()
    );
    path
}

/// The key both address maps use.
pub fn addr_key(ip: IpAddr) -> VipAddrKey {
    let (addr, family) = fixture::addr(ip);
    VipAddrKey {
        addr,
        family,
        _pad: [0; 3],
    }
}

/// The loaded program and its maps.
pub struct DecapFixture {
    ebpf: Ebpf,
}

impl DecapFixture {
    /// Loads `lb_decap` with `local` as this host's addresses and `vips` as
    /// the VIPs.
    pub fn load(local: &[IpAddr], vips: &[IpAddr]) -> Self {
        let path = object_path();
        let mut ebpf = EbpfLoader::new()
            .load_file(&path)
            .unwrap_or_else(|e| panic!("loading {}: {e:?}", path.display()));
        let prog: &mut Xdp = ebpf
            .program_mut(decap::PROGRAM)
            .unwrap_or_else(|| panic!("no program {} in {}", decap::PROGRAM, path.display()))
            .try_into()
            .expect("an XDP program");
        prog.load()
            .unwrap_or_else(|e| panic!("loading {} into the kernel: {e:?}", decap::PROGRAM));
        let mut fx = DecapFixture { ebpf };
        for ip in local {
            fx.insert(decap::LOCAL, *ip);
        }
        for ip in vips {
            fx.insert(decap::VIPS, *ip);
        }
        fx
    }

    fn insert(&mut self, map: &str, ip: IpAddr) {
        let mut m: HashMap<&mut MapData, VipAddrKey, u32> = HashMap::try_from(
            self.ebpf
                .map_mut(map)
                .unwrap_or_else(|| panic!("no map {map}")),
        )
        .expect("HashMap<VipAddrKey, u32>");
        m.insert(addr_key(ip), 1, 0)
            .unwrap_or_else(|e| panic!("{map} insert {ip}: {e}"));
    }

    /// `DECAP_STATS`, summed over CPUs, indexed by `DecapStat as usize`.
    pub fn stats(&self) -> Vec<u64> {
        let m: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map(decap::STATS).expect("DECAP_STATS"))
                .expect("DECAP_STATS: PerCpuArray<u64>");
        DecapStat::ALL
            .iter()
            .map(|s| {
                m.get(&(*s as u32), 0)
                    .expect("DECAP_STATS get")
                    .iter()
                    .sum()
            })
            .collect()
    }

    /// Runs one frame through `lb_decap` (received on `lo`).
    pub fn run(&self, frame: &[u8]) -> RunResult {
        self.run_ctx(frame, None)
    }

    /// Runs one frame through `lb_decap` as received on `ifname` of the
    /// fixture namespace ([`fixture::xdp_md_on`]).
    pub fn run_on(&self, frame: &[u8], ifname: &str) -> RunResult {
        self.run_ctx(frame, Some(&fixture::xdp_md_on(frame, ifname)))
    }

    fn run_ctx(&self, frame: &[u8], ctx_in: Option<&[u8]>) -> RunResult {
        let prog: &Xdp = self
            .ebpf
            .program(decap::PROGRAM)
            .expect("program")
            .try_into()
            .expect("XDP program");
        let mut out = vec![0u8; frame.len() + 64];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in,
            ..TestRunOptions::default()
        };
        let r = prog
            .test_run(opts)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN failed: {e:?}"));
        out.truncate(usize::try_from(r.data_size_out).expect("size"));
        RunResult {
            action: r.return_value,
            output: out,
        }
    }
}
