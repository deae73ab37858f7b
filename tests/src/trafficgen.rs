//! A packet generator at line rate for tests and benchmarks: a thread in a
//! namespace sending one frame again and again out of an interface with
//! `BPF_PROG_TEST_RUN` in live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`,
//! what `xdp-trafficgen` does). `bench_wrap` (lb-bench-ebpf) restores the
//! frame before every send and varies its source port, and optionally the
//! low 16 bits of its source address, from a per-CPU sequence, so each frame
//! is a new 5-tuple until the sequence wraps at [`Vary::flows`]; its
//! `XDP_TX` (`bench_tx`) sends the frame. Frames sent are counted by
//! `bench_wrap` itself, so the count is exact at any moment.
//!
//! (Debian's `xdp-trafficgen` 1.3.1 does not load on this kernel: its BPF
//! object needs the `xdp_redirect_map_err` tracepoint, gone since Linux
//! 6.13; and it can vary destination ports only.)
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::thread::JoinHandleExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use aya::maps::{Array, Map, MapData, PerCpuArray, ProgramArray};
use aya::programs::{ProgramError, TestRun, TestRunAttrs, TestRunOptions, Xdp};
use aya::sys::SyscallError;
use aya::{Ebpf, EbpfLoader};

use crate::fixture;
use crate::netns::Netns;
use crate::packet::Mac;

/// Mirrors `BenchPacket` in lb-bench-ebpf.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BenchPacket {
    pub len: u32,
    pub vary_port_off: u32,
    pub vary_addr_off: u32,
    /// The sequence is taken modulo `vary_mask + 1` (0: not at all).
    pub vary_mask: u32,
    pub l4_csum_off: u32,
    pub ip_csum_off: u32,
    /// Multiplies the sequence before the mask (0 or 1: in order).
    pub vary_stride: u32,
    pub bytes: [u8; 256],
}
// SAFETY: repr(C), integers and a byte array, no implicit padding.
unsafe impl aya::Pod for BenchPacket {}

/// What changes from one generated frame to the next.
#[derive(Clone, Copy, Debug)]
pub struct Vary {
    /// Offset of the 16-bit source port in the frame.
    pub port_offset: u32,
    /// Offset of the 32-bit source address whose low 16 bits take the
    /// sequence's high bits, or `None` to keep the address.
    pub addr_offset: Option<u32>,
    /// Distinct 5-tuples before the sequence wraps: a power of two, at most
    /// 2^16 without `addr_offset`.
    pub flows: u32,
    /// Offsets of the TCP/UDP and IPv4 header checksums to keep right, or
    /// `None` (a benchmark sink does not look; a real stack drops a frame
    /// with a wrong one).
    pub l4_csum_offset: Option<u32>,
    pub ip_csum_offset: Option<u32>,
}

impl Vary {
    /// The source port of an IPv4 frame without VLAN tag or options.
    pub const IPV4_SPORT: u32 = 14 + 20;
    /// The source address of such a frame.
    pub const IPV4_SADDR: u32 = 14 + 12;

    /// `flows` distinct source ports (and addresses beyond 2^16) of an IPv4
    /// frame.
    pub fn ipv4(flows: u32) -> Self {
        assert!(flows.is_power_of_two(), "flows must be a power of two");
        Self {
            port_offset: Self::IPV4_SPORT,
            addr_offset: (flows > 1 << 16).then_some(Self::IPV4_SADDR),
            flows,
            l4_csum_offset: None,
            ip_csum_offset: None,
        }
    }

    /// Keeps the frame's checksums right (IPv4, no options; `proto` TCP or
    /// UDP), so that the targets' stacks accept every varied frame.
    pub fn valid_checksums(self, proto: u8) -> Self {
        let l4 = match proto {
            6 => 16,
            17 => 6,
            other => panic!("no checksum offset for protocol {other}"),
        };
        Self {
            l4_csum_offset: Some(Self::IPV4_SPORT + l4),
            ip_csum_offset: Some(14 + 10),
            ..self
        }
    }

    fn packet(&self, frame: &[u8]) -> BenchPacket {
        assert!(frame.len() <= 256, "frame longer than the 256-byte buffer");
        let mut bytes = [0u8; 256];
        bytes[..frame.len()].copy_from_slice(frame);
        BenchPacket {
            len: frame.len() as u32,
            vary_port_off: self.port_offset,
            vary_addr_off: self.addr_offset.unwrap_or(0),
            vary_mask: self.flows.wrapping_sub(1),
            l4_csum_off: self.l4_csum_offset.unwrap_or(0),
            ip_csum_off: self.ip_csum_offset.unwrap_or(0),
            vary_stride: 0,
            bytes,
        }
    }
}

/// Frames per `BPF_PROG_TEST_RUN` call. Every live-frames call sets up and
/// tears down a page pool, which sleeps (tens of ms here), so calls must be
/// long; the generator is interrupted with [`STOP_SIGNAL`] rather than
/// waited for.
const FRAMES_PER_CALL: u32 = 1 << 26;
/// Interrupts the generator's test run (`EINTR`); a no-op handler is
/// installed so that it does not end the process.
const STOP_SIGNAL: libc::c_int = libc::SIGUSR1;

/// The object with the harness programs, beside the XDP program.
pub fn bench_object() -> PathBuf {
    let path = fixture::object_path().with_file_name("lb-bench-ebpf");
    assert!(
        path.is_file(),
        "{} missing: `cargo xtask build` builds it beside the XDP program",
        path.display()
    );
    path
}

/// Loads the harness object with `programs` loaded into the kernel.
pub fn load_bench(programs: &[&str]) -> Ebpf {
    load_bench_sized(programs, &[])
}

/// [`load_bench`] with maps sized at load: `(map name, entries)`.
pub fn load_bench_sized(programs: &[&str], sizes: &[(&str, u32)]) -> Ebpf {
    let mut loader = EbpfLoader::new();
    for &(map, entries) in sizes {
        loader.map_max_entries(map, entries);
    }
    let mut ebpf = loader
        .load_file(bench_object())
        .unwrap_or_else(|e| panic!("loading lb-bench-ebpf: {e:?}"));
    for name in programs {
        xdp_mut(&mut ebpf, name)
            .load()
            .unwrap_or_else(|e| panic!("loading {name}: {e:?}"));
    }
    ebpf
}

pub fn xdp_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> &'a mut Xdp {
    ebpf.program_mut(name)
        .unwrap_or_else(|| panic!("no program {name}"))
        .try_into()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The running generator; stopped (and joined) on drop.
pub struct Generator {
    stop: Arc<AtomicBool>,
    seq: PerCpuArray<MapData, u64>,
    handle: Option<JoinHandle<()>>,
}

/// `struct xdp_md` as `ctx_in`: data, data_end, data_meta, ingress_ifindex,
/// rx_queue_index, egress_ifindex.
fn xdp_md(len: usize, ifindex: u32) -> Vec<u8> {
    [0, len as u32, 0, ifindex, 0, 0]
        .iter()
        .flat_map(|v: &u32| v.to_ne_bytes())
        .collect()
}

extern "C" fn ignore_signal(_: libc::c_int) {}

fn install_stop_handler() {
    // SAFETY: installs a handler that does nothing; no SA_RESTART, so a
    // blocked test run returns EINTR.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        let rc = libc::sigaction(STOP_SIGNAL, &sa, std::ptr::null_mut());
        assert_eq!(rc, 0, "sigaction: {}", std::io::Error::last_os_error());
    }
}

/// Where and how to send.
#[derive(Clone, Debug)]
pub struct GeneratorSpec {
    /// Interface in the namespace the frames leave through.
    pub dev: String,
    pub frame: Vec<u8>,
    pub vary: Vary,
    /// CPU the sending thread is pinned to.
    pub cpu: usize,
    /// Frames per live-frames batch (kernel maximum 256).
    pub batch: u32,
}

impl Generator {
    /// Starts sending from namespace `ns`; returns once the first frames
    /// went out.
    pub fn start(ns: &Netns, spec: GeneratorSpec) -> Self {
        install_stop_handler();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<MapData, String>>();
        let path = PathBuf::from("/run/netns").join(ns.name());
        let handle = {
            let stop = stop.clone();
            thread::Builder::new()
                .name("trafficgen".into())
                .spawn(move || {
                    if let Err(e) = generate(&path, &spec, &stop, &ready_tx) {
                        // Nobody may be listening any more; the error is also
                        // the thread's panic message.
                        let _ = ready_tx.send(Err(e.clone()));
                        panic!("generator: {e}");
                    }
                })
                .expect("spawn generator")
        };
        let seq = match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(map)) => PerCpuArray::try_from(Map::PerCpuArray(map)).expect("SEQ"),
            Ok(Err(e)) => panic!("generator failed to start: {e}"),
            Err(e) => panic!("generator did not start in 10 s: {e}"),
        };
        let mut generator = Self {
            stop,
            seq,
            handle: Some(handle),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while generator.sent() == 0 {
            if generator
                .handle
                .as_ref()
                .is_some_and(JoinHandle::is_finished)
            {
                generator.halt();
                panic!("generator ended before sending");
            }
            assert!(Instant::now() < deadline, "generator sent nothing in 10 s");
            thread::sleep(Duration::from_millis(5));
        }
        generator
    }

    /// Frames generated so far.
    pub fn sent(&self) -> u64 {
        self.seq
            .get(&0, 0)
            .map(|v| v.iter().sum())
            .unwrap_or_else(|e| panic!("reading SEQ: {e}"))
    }

    /// Stops and joins; returns every frame sent.
    pub fn stop(mut self) -> u64 {
        self.halt();
        self.sent()
    }

    fn halt(&mut self) {
        let Some(h) = self.handle.take() else {
            return;
        };
        self.stop.store(true, Ordering::Relaxed);
        // The signal may land just before the thread enters its next test
        // run; keep sending until it has left.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !h.is_finished() && Instant::now() < deadline {
            // SAFETY: pthread_kill on a thread that has not been joined.
            unsafe { libc::pthread_kill(h.as_pthread_t(), STOP_SIGNAL) };
            thread::sleep(Duration::from_millis(10));
        }
        if !h.is_finished() {
            eprintln!("generator did not stop within 10 s; leaving it");
            return;
        }
        if let Err(panic) = h.join()
            && !thread::panicking()
        {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.halt();
    }
}

fn generate(
    netns_path: &Path,
    spec: &GeneratorSpec,
    stop: &AtomicBool,
    ready: &mpsc::Sender<Result<MapData, String>>,
) -> Result<(), String> {
    let file = File::open(netns_path).map_err(|e| format!("open {}: {e}", netns_path.display()))?;
    // SAFETY: plain syscall on a valid fd; only this thread changes namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()));
    }
    pin_cpu(spec.cpu)?;
    let name = std::ffi::CString::new(spec.dev.as_str()).map_err(|e| e.to_string())?;
    // SAFETY: a valid NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(format!("no {} in {}", spec.dev, netns_path.display()));
    }

    let mut ebpf = load_bench(&["bench_wrap", "bench_tx"]);
    let tx_fd = xdp_mut(&mut ebpf, "bench_tx")
        .fd()
        .map_err(|e| format!("bench_tx fd: {e:?}"))?
        .try_clone()
        .map_err(|e| format!("bench_tx fd: {e:?}"))?;
    let mut jump: ProgramArray<_> =
        ProgramArray::try_from(ebpf.take_map("JUMP").expect("JUMP")).expect("JUMP");
    jump.set(0, &tx_fd, 0).map_err(|e| format!("JUMP: {e:?}"))?;
    let mut packet: Array<_, BenchPacket> =
        Array::try_from(ebpf.take_map("PACKET").expect("PACKET")).expect("PACKET");
    packet
        .set(0, spec.vary.packet(&spec.frame), 0)
        .map_err(|e| format!("PACKET: {e:?}"))?;
    let Some(Map::PerCpuArray(seq)) = ebpf.take_map("SEQ") else {
        return Err("no per-CPU array SEQ in lb-bench-ebpf".into());
    };
    // Only our reader holds SEQ from here on; a clone of the fd keeps the
    // program's reference.
    let _ = ready.send(Ok(seq));

    let ctx = xdp_md(spec.frame.len(), ifindex);
    let prog: &Xdp = ebpf
        .program("bench_wrap")
        .expect("bench_wrap")
        .try_into()
        .expect("bench_wrap is XDP");
    while !stop.load(Ordering::Relaxed) {
        let r = prog.test_run(TestRunOptions {
            data_in: Some(&spec.frame),
            ctx_in: Some(&ctx),
            repeat: FRAMES_PER_CALL,
            attrs: TestRunAttrs::new().xdp_live_frames(spec.batch),
            ..TestRunOptions::default()
        });
        match r {
            Ok(_) => {}
            Err(ProgramError::SyscallError(SyscallError { io_error, .. }))
                if io_error.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => {
                return Err(format!(
                    "BPF_PROG_TEST_RUN (live frames) on {}: {e:?}",
                    spec.dev
                ));
            }
        }
    }
    Ok(())
}

/// Pins the calling thread to `cpu`.
pub fn pin_cpu(cpu: usize) -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "sched_setaffinity to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// An interface's index and MAC address.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    pub ifindex: u32,
    pub mac: Mac,
}

/// `ifindex` and MAC of `dev` in `ns`, from `ip -o link show`.
pub fn link(ns: &Netns, dev: &str) -> Link {
    let out = ns.ip(&["-o", "link", "show", "dev", dev]);
    let text = String::from_utf8_lossy(&out.stdout);
    let ifindex = text
        .split(':')
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ifindex in {text:?}"));
    let mac = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .and_then(parse_mac)
        .unwrap_or_else(|| panic!("no MAC in {text:?}"));
    Link { ifindex, mac }
}

pub fn parse_mac(s: &str) -> Option<Mac> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    bytes.try_into().ok()
}

pub fn mac_str(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
