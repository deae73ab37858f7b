//! Bad input of any kind gets a defined answer: random frames and mutated
//! valid ones (flipped bytes, truncations, VLAN tags, extension headers)
//! never abort the program, and every one moves exactly one `STATS` counter
//! by one. A fixed-seed generator keeps any failure reproducible (the case
//! number and the frame are printed).
use std::net::{IpAddr, SocketAddr};

use lb_common::{PROTO_TCP, PROTO_UDP, Stat, TargetState, VipMeta};
use lb_tests::{
    fixture::{self, Fixture, XDP_ABORTED, topo},
    packet::{Packet, icmp_frag_needed_rest, tcp_flags},
};

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const VIP4: &str = "192.0.2.10:80";
const VIP6: &str = "[2001:db8:a::10]:80";
const CLIENT4: &str = "203.0.113.7:40000";
const CLIENT6: &str = "[2001:db8:c::7]:40000";

fn sock(s: &str) -> SocketAddr {
    s.parse().expect("literal")
}

fn program(fx: &mut Fixture) {
    for (slot, (vip, v6)) in [(VIP4, false), (VIP6, true)].into_iter().enumerate() {
        let ip: IpAddr = if v6 {
            topo::host6(1).into()
        } else {
            topo::host4(1).into()
        };
        let id = slot as u32 + 1;
        fx.set_target(
            id,
            fixture::target(SocketAddr::new(ip, 8080), TargetState::Active, 1),
        );
        fx.set_ring(slot as u32, &[id]);
        for proto in [PROTO_TCP, PROTO_UDP] {
            fx.add_vip(
                fixture::vip_key(sock(vip), proto),
                VipMeta {
                    vip_id: slot as u32,
                    ring_slot: slot as u32,
                    ring_size: fx.ring_size(),
                    flags: 0,
                    idle_timeout_s: 350,
                    generation: 1,
                },
            );
        }
    }
}

/// Valid frames of every kind the program handles, to be mutated.
fn seeds() -> Vec<Vec<u8>> {
    let t4 = SocketAddr::new(topo::host4(1).into(), 8080);
    let t6 = SocketAddr::new(topo::host6(1).into(), 8080);
    let syn4 = Packet::tcp(sock(CLIENT4), sock(VIP4), tcp_flags::SYN);
    let syn6 = Packet::tcp(sock(CLIENT6), sock(VIP6), tcp_flags::SYN);
    vec![
        syn4.build(),
        syn6.build(),
        Packet::udp(sock(CLIENT4), sock(VIP4)).build(),
        Packet::udp(sock(CLIENT6), sock(VIP6)).build(),
        Packet::tcp(t4, sock(CLIENT4), tcp_flags::ACK).build(),
        Packet::tcp(t6, sock(CLIENT6), tcp_flags::ACK | tcp_flags::FIN).build(),
        Packet::tcp(sock(CLIENT4), sock(VIP4), tcp_flags::RST)
            .vlan(7)
            .build(),
        Packet::icmp_error(
            sock(CLIENT4).ip(),
            sock(VIP4).ip(),
            3,
            4,
            icmp_frag_needed_rest(1400),
            &Packet::tcp(sock(VIP4), sock(CLIENT4), tcp_flags::ACK),
            28,
        )
        .build(),
        Packet::icmp_echo(sock(CLIENT6).ip(), sock(VIP6).ip()).build(),
    ]
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut f = seed.to_vec();
    match rng.below(4) {
        // Random bytes of a random length (at least an Ethernet header).
        0 => {
            let len = 14 + rng.below(200);
            f = (0..len).map(|_| rng.next() as u8).collect();
            // Half of them claim to be IPv4 or IPv6.
            if rng.below(2) == 0 {
                f[12..14].copy_from_slice(if rng.below(2) == 0 {
                    &[0x08, 0x00]
                } else {
                    &[0x86, 0xdd]
                });
            }
        }
        // Flip a few bytes past the Ethernet addresses.
        1 => {
            for _ in 0..1 + rng.below(4) {
                let i = 12 + rng.below(f.len() - 12);
                f[i] ^= 1 << rng.below(8);
            }
        }
        // Truncate anywhere after the Ethernet header.
        2 => f.truncate(14 + rng.below(f.len() - 13)),
        // Both.
        _ => {
            let i = 12 + rng.below(f.len() - 12);
            f[i] = rng.next() as u8;
            f.truncate(14 + rng.below(f.len() - 13));
        }
    }
    f
}

#[test]
fn mangled_frames_get_a_defined_verdict() {
    fixture::with_netns(|| {
        let mut fx = Fixture::load(13);
        program(&mut fx);
        let seeds = seeds();
        let mut rng = Rng(0x5eed_1b0a_7c0f_fee5);
        let mut moved_by_stat = vec![0u64; Stat::ALL.len()];
        for case in 0..3000 {
            let seed = &seeds[rng.below(seeds.len())];
            let frame = mutate(&mut rng, seed);
            let before = fx.stats();
            let r = fx.run(&frame);
            let after = fx.stats();
            assert_ne!(
                r.action, XDP_ABORTED,
                "case {case}: XDP_ABORTED for frame {frame:02x?}"
            );
            let moved: Vec<(usize, u64)> = after
                .iter()
                .zip(&before)
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .map(|(i, (a, b))| (i, a - b))
                .collect();
            assert!(
                moved.len() == 1 && moved[0].1 == 1,
                "case {case}: expected exactly one counter +1, got {:?} for frame {frame:02x?}",
                moved
                    .iter()
                    .map(|(i, n)| format!("{} +{n}", Stat::ALL[*i].name()))
                    .collect::<Vec<_>>()
            );
            moved_by_stat[moved[0].0] += 1;
        }
        let seen: Vec<String> = Stat::ALL
            .iter()
            .zip(&moved_by_stat)
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| format!("{} {n}", s.name()))
            .collect();
        eprintln!("verdicts over 3000 mangled frames: {}", seen.join(", "));
        // The mutations must reach deep paths, not only the parser's exits.
        for must in [Stat::Forwarded, Stat::PassMalformed, Stat::DropMalformed] {
            assert!(
                moved_by_stat[must as usize] > 0,
                "no mangled frame ended as {}: the mutations are too shallow ({seen:?})",
                must.name()
            );
        }
    });
}
