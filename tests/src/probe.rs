//! Fixture harness of the dsr health probes' encapsulation program
//! (`lb_probe_encap`, the `lb-probe` object beside the balancer's): loads
//! it, fills `PROBE_TARGETS` directly and runs frames with a chosen
//! `skb->mark` through `BPF_PROG_TEST_RUN`. The program asks the kernel's
//! FIB for the target's interface, so cases run in the fixture namespace
//! ([`crate::fixture::with_netns`]), whose `lo` (the device of every test
//! run) forwards.
use std::net::IpAddr;
use std::path::PathBuf;

use aya::maps::{HashMap, MapData, PerCpuArray};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use aya::{Ebpf, EbpfLoader};
use lb_common::VipAddrKey;
use lb_common::probe::{self, ProbeStat};

use crate::fixture;

pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;

/// `struct __sk_buff`'s size and the offset of its `mark`: the test run's
/// context in and out.
const SKB_CTX_LEN: usize = 192;
const SKB_MARK: usize = 8;

/// Name of a tc action for messages.
pub fn action_name(action: u32) -> String {
    match action {
        TC_ACT_OK => "TC_ACT_OK".into(),
        TC_ACT_SHOT => "TC_ACT_SHOT".into(),
        TC_ACT_REDIRECT => "TC_ACT_REDIRECT".into(),
        other => format!("tc action {other}"),
    }
}

/// The probe object, beside the balancer's.
pub fn object_path() -> PathBuf {
    let path = fixture::object_path().with_file_name("lb-probe");
    assert!(
        path.is_file(),
        "{} missing: `cargo xtask build` builds it beside the XDP program",
        path.display()
    );
    path
}

/// What one test run returned: the action, the frame and the mark after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRun {
    pub action: u32,
    pub output: Vec<u8>,
    pub mark: u32,
}

/// The loaded program and its maps.
pub struct ProbeFixture {
    ebpf: Ebpf,
}

impl ProbeFixture {
    /// Loads `lb_probe_encap` with `targets` as (mark, target address).
    pub fn load(targets: &[(u32, IpAddr)]) -> Self {
        let path = object_path();
        let mut ebpf = EbpfLoader::new()
            .load_file(&path)
            .unwrap_or_else(|e| panic!("loading {}: {e:?}", path.display()));
        let prog: &mut SchedClassifier = ebpf
            .program_mut(probe::PROGRAM)
            .unwrap_or_else(|| panic!("no program {} in {}", probe::PROGRAM, path.display()))
            .try_into()
            .expect("a tc classifier");
        prog.load()
            .unwrap_or_else(|e| panic!("loading {} into the kernel: {e:?}", probe::PROGRAM));
        let mut fx = ProbeFixture { ebpf };
        for (mark, ip) in targets {
            fx.insert(*mark, *ip);
        }
        fx
    }

    fn insert(&mut self, mark: u32, ip: IpAddr) {
        let mut m: HashMap<&mut MapData, u32, VipAddrKey> = HashMap::try_from(
            self.ebpf
                .map_mut(probe::TARGETS)
                .unwrap_or_else(|| panic!("no map {}", probe::TARGETS)),
        )
        .expect("HashMap<u32, VipAddrKey>");
        m.insert(mark, crate::decap::addr_key(ip), 0)
            .unwrap_or_else(|e| panic!("{} insert {mark:#x}: {e}", probe::TARGETS));
    }

    /// `PROBE_STATS`, summed over CPUs, indexed by `ProbeStat as usize`.
    pub fn stats(&self) -> Vec<u64> {
        let m: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map(probe::STATS).expect("PROBE_STATS"))
                .expect("PROBE_STATS: PerCpuArray<u64>");
        ProbeStat::ALL
            .iter()
            .map(|s| {
                m.get(&(*s as u32), 0)
                    .expect("PROBE_STATS get")
                    .iter()
                    .sum()
            })
            .collect()
    }

    /// The loaded program (verifier statistics).
    pub fn program(&self) -> &SchedClassifier {
        self.ebpf
            .program(probe::PROGRAM)
            .expect("program")
            .try_into()
            .expect("a tc classifier")
    }

    /// Names of the object's maps, sorted.
    pub fn map_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.ebpf.maps().map(|(n, _)| n.to_owned()).collect();
        names.sort();
        names
    }

    /// Runs one frame with `skb->mark = mark` (on `lo`, the test run's
    /// device).
    pub fn run(&self, frame: &[u8], mark: u32) -> ProbeRun {
        let mut ctx_in = [0u8; SKB_CTX_LEN];
        ctx_in[SKB_MARK..SKB_MARK + 4].copy_from_slice(&mark.to_ne_bytes());
        let mut ctx_out = [0u8; SKB_CTX_LEN];
        let mut out = vec![0u8; frame.len() + 128];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx_in),
            ctx_out: Some(&mut ctx_out),
            ..TestRunOptions::default()
        };
        let r = self
            .program()
            .test_run(opts)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN failed: {e:?}"));
        out.truncate(usize::try_from(r.data_size_out).expect("size"));
        let mut m = [0u8; 4];
        m.copy_from_slice(&ctx_out[SKB_MARK..SKB_MARK + 4]);
        ProbeRun {
            action: r.return_value,
            output: out,
            mark: u32::from_ne_bytes(m),
        }
    }
}
