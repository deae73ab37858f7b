//! `lb target` in network namespaces. A sender namespace plays the dsr
//! balancer: it sends real IPIP and IP6IP6 frames (built with the packet
//! builder, sent on a raw socket: the kernel here has no tunnel modules)
//! to a target namespace where `lb target attach` ran. The target's own
//! stack must take the inner packets as the client's: a UDP server on the
//! VIP receives the datagram from the client's address, and a TCP listener
//! on the VIP answers the SYN with a SYN-ACK from the VIP straight to the
//! client (which the sender sees on its link). Then `detach` must leave the
//! host as it was. Needs root; `cargo xtask test` builds `lb`.

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use lb_tests::netns::{Bpffs, Netns, TempDir, VethPair, require_root, run, unique_id};
use lb_tests::packet::tcp_flags::{ACK, SYN};
use lb_tests::packet::{Mac, Packet};
use lb_tests::proc::{lb_bin, lb_cmd};
use lb_tests::raw::RawSocket;

const SND_MAC: Mac = [0x02, 0, 0, 0, 0x60, 0x01];
const TGT_MAC: Mac = [0x02, 0, 0, 0, 0x60, 0x02];
const SND4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 60, 0, 1));
const TGT4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 60, 0, 2));
const SND6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd60, 0, 0, 0, 0, 0, 0, 1));
const TGT6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd60, 0, 0, 0, 0, 0, 0, 2));
const VIP4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
const VIP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 0x10));
/// A VIP the operator had on `lo` already: detach must leave it there.
const VIP4_THERE: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11));
const CLIENT4: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
const CLIENT6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 7));

/// Generous for a loaded 2-core machine; only the failure waits this long.
const WAIT: Duration = Duration::from_secs(10);

/// The sysctls `attach` sets, as `sysctl` names them, and the values the
/// target starts with: all but `lo`'s forwarding (the default 0) differ
/// from the defaults, and all from what attach sets, so that a restore is
/// visible.
const SYSCTLS: [(&str, &str); 8] = [
    ("net.ipv4.conf.all.rp_filter", "2"),
    ("net.ipv4.conf.tgt0.rp_filter", "1"),
    ("net.ipv4.conf.all.arp_ignore", "0"),
    ("net.ipv4.conf.tgt0.arp_ignore", "0"),
    ("net.ipv4.conf.all.arp_announce", "0"),
    ("net.ipv4.conf.tgt0.arp_announce", "1"),
    ("net.ipv4.conf.lo.forwarding", "0"),
    ("net.ipv6.conf.lo.forwarding", "0"),
];
const WANTED: [&str; 8] = ["0", "0", "1", "1", "2", "2", "1", "1"];

/// Two namespaces joined by a veth pair, a bpffs for the pins. Fields drop
/// in order: the bpffs before its directory, the namespaces last.
struct Topo {
    bpffs: Bpffs,
    _dir: TempDir,
    _veth: VethPair,
    snd: Netns,
    tgt: Netns,
}

impl Topo {
    fn new() -> Self {
        require_root();
        let id = unique_id();
        let dir = TempDir::new(format!("/run/{id}"));
        let bpffs = Bpffs::mount(dir.path().join("bpffs"));
        let snd = Netns::new(format!("{id}_snd"));
        let tgt = Netns::new(format!("{id}_tgt"));
        let veth = VethPair::new(&snd, "snd0", &tgt, "tgt0");
        for (ns, dev, mac, a4, a6) in [
            (&snd, "snd0", SND_MAC, SND4, SND6),
            (&tgt, "tgt0", TGT_MAC, TGT4, TGT6),
        ] {
            ns.ip(&["link", "set", dev, "address", &mac_text(mac)]);
            ns.ip(&["link", "set", dev, "up"]);
            ns.ip(&["addr", "add", &format!("{a4}/24"), "dev", dev]);
            ns.ip(&["addr", "add", &format!("{a6}/64"), "dev", dev, "nodad"]);
        }
        // Replies go back the way a real target's would: its default route.
        tgt.ip(&["route", "add", "default", "via", &SND4.to_string()]);
        tgt.ip(&["-6", "route", "add", "default", "via", &SND6.to_string()]);
        for (key, value) in SYSCTLS {
            tgt.sysctl(key, value);
        }
        tgt.ip(&["addr", "add", &format!("{VIP4_THERE}/32"), "dev", "lo"]);
        Self {
            bpffs,
            _dir: dir,
            _veth: veth,
            snd,
            tgt,
        }
    }

    fn pin_dir(&self) -> PathBuf {
        self.bpffs.path().join("target")
    }

    /// `lb target <args> --pin-dir <ours>` in the target namespace.
    fn lb_target(&self, args: &[&str]) -> std::process::Output {
        let pin_dir = self.pin_dir();
        let mut all: Vec<&OsStr> = vec![OsStr::new("target")];
        all.extend(args.iter().map(OsStr::new));
        all.extend([OsStr::new("--pin-dir"), pin_dir.as_os_str()]);
        lb_cmd(&lb_bin(), self.tgt.name(), &all)
    }

    /// Like `lb_target`, panicking unless it succeeds; its stdout.
    fn lb_target_ok(&self, args: &[&str]) -> String {
        let out = self.lb_target(args);
        assert!(
            out.status.success(),
            "lb target {args:?} failed ({}):\nstderr: {}\nstdout: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn sysctls(&self) -> Vec<String> {
        SYSCTLS
            .iter()
            .map(|(key, _)| {
                let out = self.tgt.exec(&["sysctl", "-n", key]);
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            })
            .collect()
    }

    /// The addresses on the target's `lo`, as `ip` prints them (a/len).
    fn lo_addrs(&self) -> Vec<String> {
        let out = self.tgt.ip(&["-o", "addr", "show", "dev", "lo"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
            .collect()
    }

    fn xdp_on_tgt0(&self) -> bool {
        let out = self.tgt.ip(&["link", "show", "dev", "tgt0"]);
        String::from_utf8_lossy(&out.stdout).contains("xdp")
    }

    /// Sends `inner` wrapped toward the target, from the sender's link.
    fn send_encapsulated(&self, inner: Packet) -> RawSocket {
        let (outer_src, outer_dst) = if inner_is_v6(&inner) {
            (SND6, TGT6)
        } else {
            (SND4, TGT4)
        };
        let frame = inner
            .macs(SND_MAC, TGT_MAC)
            .encap(outer_src, outer_dst)
            .build();
        let sock = self
            .snd
            .run(|| RawSocket::open("snd0"))
            .expect("raw socket on snd0");
        sock.send(&frame).expect("send the encapsulated frame");
        sock
    }
}

fn inner_is_v6(p: &Packet) -> bool {
    matches!(p.net, lb_tests::packet::Net::Ipv6(_))
}

fn mac_text(mac: Mac) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// The value of counter `name` in `lb target status` output.
fn counter(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(name)).then(|| words.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no counter {name} in:\n{status}"))
}

/// A UDP datagram wrapped to the VIP reaches a server bound to the VIP
/// with the client's address as its source.
fn udp_reaches_the_vip(t: &Topo, vip: IpAddr, client: IpAddr) {
    let server = t
        .tgt
        .run(move || UdpSocket::bind(SocketAddr::new(vip, 5353)))
        .expect("bind the UDP server to the VIP");
    server.set_read_timeout(Some(WAIT)).expect("timeout");
    let from = SocketAddr::new(client, 40000);
    t.send_encapsulated(
        Packet::udp(from, SocketAddr::new(vip, 5353)).payload(b"through the tunnel"),
    );
    let mut buf = [0u8; 256];
    let (n, peer) = server
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("the UDP server on {vip} received nothing: {e}"));
    assert_eq!(&buf[..n], b"through the tunnel");
    assert_eq!(peer, from, "the server must see the client's own address");
}

/// A SYN wrapped to the VIP is answered by the target's stack with a
/// SYN-ACK from the VIP to the client, straight out of the target's link.
fn syn_is_answered_from_the_vip(t: &Topo, vip: IpAddr, client: IpAddr) {
    let _listener = t
        .tgt
        .run(move || TcpListener::bind(SocketAddr::new(vip, 80)))
        .expect("listen on the VIP");
    let from = SocketAddr::new(client, 40001);
    let syn = Packet::tcp(from, SocketAddr::new(vip, 80), SYN);
    let seq = match syn.clone().build() {
        f if inner_is_v6(&syn) => u32::from_be_bytes([f[58], f[59], f[60], f[61]]),
        f => u32::from_be_bytes([f[38], f[39], f[40], f[41]]),
    };
    let sock = t.send_encapsulated(syn);
    let synack = sock
        .recv_matching(WAIT, |f| is_synack(f, vip, client, seq.wrapping_add(1)))
        .expect("receive on snd0");
    assert!(
        synack.is_some(),
        "no SYN-ACK from {vip}:80 to {from} acknowledging {seq} came back"
    );
}

/// Whether `f` is a TCP SYN-ACK `vip:80 -> client:40001` acknowledging `ack`.
fn is_synack(f: &[u8], vip: IpAddr, client: IpAddr, ack: u32) -> bool {
    let (l3, v6) = match f.get(12..14) {
        Some([0x08, 0x00]) => (14, false),
        Some([0x86, 0xdd]) => (14, true),
        _ => return false,
    };
    let (src, dst, proto, l4) = if v6 {
        let Some(h) = f.get(l3..l3 + 40) else {
            return false;
        };
        let a = |o: usize| IpAddr::from(<[u8; 16]>::try_from(&h[o..o + 16]).expect("16"));
        (a(8), a(24), h[6], l3 + 40)
    } else {
        let Some(h) = f.get(l3..l3 + 20) else {
            return false;
        };
        let a = |o: usize| IpAddr::from(<[u8; 4]>::try_from(&h[o..o + 4]).expect("4"));
        (a(12), a(16), h[9], l3 + usize::from(h[0] & 0x0f) * 4)
    };
    let Some(tcp) = f.get(l4..l4 + 20) else {
        return false;
    };
    src == vip
        && dst == client
        && proto == 6
        && tcp[0..2] == 80u16.to_be_bytes()
        && tcp[2..4] == 40001u16.to_be_bytes()
        && tcp[13] & (SYN | ACK) == SYN | ACK
        && tcp[8..12] == ack.to_be_bytes()
}

#[test]
fn attach_decapsulates_for_the_stack_and_detach_restores_the_host() {
    let t = Topo::new();
    let before_lo = t.lo_addrs();
    let before_sysctls = t.sysctls();
    let vips = [
        "attach",
        "--interface",
        "tgt0",
        "--vip",
        &VIP4.to_string(),
        &VIP4_THERE.to_string(),
        &VIP6.to_string(),
    ]
    .map(str::to_owned);
    let vips: Vec<&str> = vips.iter().map(String::as_str).collect();
    t.lb_target_ok(&vips);
    assert!(t.xdp_on_tgt0(), "no XDP program on tgt0 after attach");
    let lo = t.lo_addrs();
    for want in [format!("{VIP4}/32"), format!("{VIP6}/128")] {
        assert!(lo.contains(&want), "{want} not on lo: {lo:?}");
    }
    assert_eq!(t.sysctls(), WANTED, "sysctls after attach");
    // Forwarding on lo only: the target does not become a router.
    for key in [
        "net.ipv4.conf.tgt0.forwarding",
        "net.ipv6.conf.tgt0.forwarding",
        "net.ipv4.ip_forward",
    ] {
        let out = t.tgt.exec(&["sysctl", "-n", key]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{key}");
    }
    let again = t.lb_target_ok(&vips);
    assert!(
        again.contains("nothing changed"),
        "a second attach changed something:\n{again}"
    );
    assert_eq!(t.lo_addrs(), lo, "a second attach changed lo");

    udp_reaches_the_vip(&t, VIP4, CLIENT4);
    udp_reaches_the_vip(&t, VIP6, CLIENT6);
    syn_is_answered_from_the_vip(&t, VIP4, CLIENT4);
    syn_is_answered_from_the_vip(&t, VIP6, CLIENT6);
    let status = t.lb_target_ok(&["status"]);
    assert_eq!(counter(&status, "decapsulated"), 4, "{status}");
    assert!(status.contains("program: lb_decap on tgt0"), "{status}");
    assert!(
        status.contains("second chance chains: forwarded"),
        "{status}"
    );

    let detached = t.lb_target_ok(&["detach"]);
    assert!(
        !t.xdp_on_tgt0(),
        "XDP still on tgt0 after detach:\n{detached}"
    );
    assert_eq!(t.lo_addrs(), before_lo, "lo after detach");
    assert_eq!(t.sysctls(), before_sysctls, "sysctls after detach");
    assert!(
        !t.pin_dir().exists(),
        "pins left: {:?}",
        std::fs::read_dir(t.pin_dir())
            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    let again = t.lb_target_ok(&["detach"]);
    assert!(again.contains("nothing attached"), "{again}");
    let status = t.lb_target_ok(&["status"]);
    assert!(status.contains("not attached"), "{status}");
}

/// What a person gets for bad input: a clear error, and nothing changed.
#[test]
fn bad_input_is_refused_with_a_clear_error() {
    let t = Topo::new();
    let before_sysctls = t.sysctls();
    for (args, want) in [
        (
            vec!["attach", "--interface", "nosuch0", "--vip", "192.0.2.10"],
            "no interface named \"nosuch0\"",
        ),
        (
            vec!["attach", "--interface", "../all", "--vip", "192.0.2.10"],
            "not a valid interface name",
        ),
        (
            vec!["attach", "--interface", "tgt0", "--vip", "192.0.2.300"],
            "invalid value '192.0.2.300' for '--vip <ADDR>...'",
        ),
        (
            vec!["attach", "--interface", "tgt0", "--vip", "0.0.0.0"],
            "0.0.0.0 is not a VIP a target can serve",
        ),
        (vec!["attach", "--interface", "tgt0"], "--vip <ADDR>"),
    ] {
        let out = t.lb_target(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    assert!(!t.pin_dir().exists(), "a refused attach left pins");
    assert!(!t.xdp_on_tgt0());
    assert_eq!(t.sysctls(), before_sysctls);
}

/// A host an older `lb` attached (its `DECAP_SAVED` block has six sysctls,
/// 44 bytes, magic `_0001`): a new attach carries the block over, so
/// detach restores the host's real originals, not the values the older
/// `lb` had set.
#[test]
fn an_older_lb_s_saved_settings_are_carried_over_and_restored() {
    carried_over_and_restored("DECAP_SAVED");
}

/// The same after a run that moved the older block aside (the pin
/// renamed, so the loader can create the new map) and failed before it
/// wrote the block into the new map: the next run finds it there.
#[test]
fn an_older_block_moved_aside_by_an_interrupted_run_is_still_carried_over() {
    carried_over_and_restored("DECAP_SAVED_v1");
}

/// Pins an older lb's block as `pin_name`, attaches, checks what status
/// shows as the originals, detaches, and checks the host got them back.
fn carried_over_and_restored(pin_name: &str) {
    let t = Topo::new();
    let before_sysctls = t.sysctls();
    // The older lb's attach: the six sysctls it knew set, the originals in
    // a 44-byte block in a pinned DECAP_SAVED.
    for ((key, _), wanted) in SYSCTLS.iter().zip(WANTED).take(6) {
        t.tgt.sysctl(key, wanted);
    }
    let mut block = Vec::new();
    block.extend(0x1b7a_0001u32.to_le_bytes());
    let mut name = [0u8; 16];
    name[..4].copy_from_slice(b"tgt0");
    block.extend(name);
    for (_, original) in SYSCTLS.iter().take(6) {
        block.extend(original.parse::<i32>().unwrap().to_le_bytes());
    }
    assert_eq!(block.len(), 44);
    std::fs::create_dir_all(t.pin_dir()).unwrap();
    let pin = t.pin_dir().join(pin_name);
    let pin = pin.to_str().unwrap();
    run(
        "bpftool",
        [
            "map",
            "create",
            pin,
            "type",
            "array",
            "key",
            "4",
            "value",
            "44",
            "entries",
            "1",
            "name",
            "DECAP_SAVED",
        ],
    );
    let mut update = vec![
        "map", "update", "pinned", pin, "key", "0", "0", "0", "0", "value",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    update.extend(block.iter().map(u8::to_string));
    run("bpftool", &update);

    let vip = VIP4.to_string();
    t.lb_target_ok(&["attach", "--interface", "tgt0", "--vip", &vip]);
    assert_eq!(t.sysctls(), WANTED, "sysctls after attach");
    let status = t.lb_target_ok(&["status"]);
    let line = status
        .lines()
        .find(|l| l.contains("net.ipv4.conf.all.rp_filter"))
        .unwrap_or_else(|| panic!("no rp_filter line in status:\n{status}"));
    assert!(
        line.ends_with("(was 2)"),
        "the older block's original is not what status shows:\n{status}"
    );
    t.lb_target_ok(&["detach"]);
    assert_eq!(t.sysctls(), before_sysctls, "sysctls after detach");
    assert!(!t.pin_dir().exists(), "pins left after detach");
}

/// A target that learns its IPv6 default route from router advertisements
/// keeps it through attach: turning on `lo`'s IPv6 forwarding makes the
/// kernel purge such routes host-wide unless attach guards them.
#[test]
fn attach_keeps_routes_learned_from_router_advertisements() {
    let t = Topo::new();
    t.tgt
        .ip(&["-6", "route", "del", "default", "via", &SND6.to_string()]);
    t.tgt.sysctl("net.ipv6.conf.tgt0.accept_ra", "1");
    let router = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x99));
    let all_nodes = IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1));
    // Hop limit 64, no flags, router lifetime 1800 s; reachable time and
    // retransmission timer unspecified, no options.
    let ra = Packet::icmp(router, all_nodes, 134, 0, [64, 0, 0x07, 0x08], vec![0; 8])
        .ttl(255)
        .macs(SND_MAC, [0x33, 0x33, 0, 0, 0, 1])
        .build();
    let sock = t
        .snd
        .run(|| RawSocket::open("snd0"))
        .expect("raw socket on snd0");
    let learned = || {
        let out = t.tgt.ip(&["-6", "route", "show", "default"]);
        String::from_utf8_lossy(&out.stdout).contains("via fe80::99 dev tgt0 proto ra")
    };
    let deadline = std::time::Instant::now() + WAIT;
    while !learned() {
        assert!(
            std::time::Instant::now() < deadline,
            "the target did not learn a default route from the advertisement"
        );
        sock.send(&ra).expect("send the router advertisement");
        std::thread::sleep(Duration::from_millis(200));
    }
    let vip = VIP6.to_string();
    t.lb_target_ok(&["attach", "--interface", "tgt0", "--vip", &vip]);
    assert_eq!(t.sysctls()[7], "1", "lo's IPv6 forwarding after attach");
    assert!(
        learned(),
        "attach dropped the route learned from the router"
    );
    let accept_ra = t
        .tgt
        .exec(&["sysctl", "-n", "net.ipv6.conf.tgt0.accept_ra"]);
    assert_eq!(String::from_utf8_lossy(&accept_ra.stdout).trim(), "1");
    t.lb_target_ok(&["detach"]);
    assert!(
        learned(),
        "detach dropped the route learned from the router"
    );
}

/// The name of the program the link pinned for `tgt0` holds.
fn linked_program(t: &Topo) -> String {
    use aya::programs::links::{FdLink, PinnedLink};
    let pinned = PinnedLink::from_pin(t.pin_dir().join("link_tgt0")).expect("the pinned link");
    let id = FdLink::from(pinned).info().expect("link info").program_id();
    aya::programs::loaded_programs()
        .flatten()
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no loaded program has id {id}"))
}

/// A target an older `lb` attached keeps its pinned link, whose program
/// was that version's: attach swaps this version's into the link (it
/// could not pass a chain on otherwise), and then changes nothing.
#[test]
fn attach_swaps_an_older_program_in_the_pinned_link_for_this_one() {
    use aya::programs::{Xdp, links::FdLink, xdp::XdpLink};
    let t = Topo::new();
    let vip = VIP4.to_string();
    let attach = ["attach", "--interface", "tgt0", "--vip", &vip];
    t.lb_target_ok(&attach);
    assert_eq!(linked_program(&t), "lb_decap");
    // Stand-in for an older lb_decap: another XDP program swapped into
    // the pinned link (the attachment stays up).
    let mut other = aya::EbpfLoader::new()
        .load_file(lb_tests::trafficgen::bench_object())
        .expect("load lb-bench-ebpf");
    let prog: &mut Xdp = other
        .program_mut("bench_pass")
        .expect("bench_pass")
        .try_into()
        .expect("an XDP program");
    prog.load().expect("load bench_pass");
    let pinned = aya::programs::links::PinnedLink::from_pin(t.pin_dir().join("link_tgt0"))
        .expect("the pinned link");
    let link = XdpLink::try_from(FdLink::from(pinned)).expect("an XDP link");
    let id = prog.attach_to_link(link).expect("swap bench_pass in");
    drop(prog.take_link(id).expect("our handle of the link"));
    assert_eq!(linked_program(&t), "bench_pass");

    let out = t.lb_target_ok(&attach);
    assert!(
        out.contains("replaced the program attached to tgt0"),
        "attach over another program:\n{out}"
    );
    assert_eq!(linked_program(&t), "lb_decap");
    udp_reaches_the_vip(&t, VIP4, CLIENT4);
    let again = t.lb_target_ok(&attach);
    assert!(
        again.contains("nothing changed"),
        "a second attach changed something:\n{again}"
    );
    t.lb_target_ok(&["detach"]);
    assert!(!t.xdp_on_tgt0(), "XDP still on tgt0 after detach");
}
