//! dsr cases (docs/datapath.md, "Client -> VIP (forward, dsr mode)"): the
//! client's packet leaves inside an outer IPv4 (protocol 4) or IPv6 (next
//! header 41) header to its target, byte for byte as the client sent it;
//! only the outer header carries this hop's TTL decrement. Expected frames
//! are built from the input's description and lb_common::encap's outer
//! source, never copied from the program.
use lb_common::{
    encap::{FLOW_LABEL_MASK, source_of_hash},
    hash::flow_hash,
};

use super::*;

/// The address an `Addr` of `family` holds.
fn ip_of(a: lb_common::Addr, family: u8) -> IpAddr {
    if family == lb_common::FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::from(u32::from_be(a[0])))
    } else {
        let mut b = [0u8; 16];
        for (i, w) in a.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(b))
    }
}

/// `p` as a dsr balancer sends it to `t` for the flow `key`: wrapped, the
/// outer header from the flow's outer source, with the inner TTL less one,
/// the inner TOS / traffic class and DF bit, the inner IPv4 id, the flow's
/// IPv6 label; Ethernet addresses of the fib lookup to the target.
fn wrapped(p: &Packet, key: &FlowKey, t: &TargetDef) -> Packet {
    wrapped_with(p, flow_hash(key), key.family, t)
}

/// [`wrapped`] for a flow whose outer-header hash is `h` (the key's
/// `flow_hash`, or what its entry holds).
fn wrapped_with(p: &Packet, h: u32, family: u8, t: &TargetDef) -> Packet {
    let src = ip_of(source_of_hash(h, family), family);
    let ttl = ttl_of(p) - 1;
    let inner = p.net.clone();
    let mut out = p.clone().encap(src, t.addr.ip()).macs(topo::FX0_MAC, t.mac);
    match (&mut out.net, inner) {
        (Net::Ipv4(outer), Net::Ipv4(inner)) => {
            outer.ttl = ttl;
            outer.tos = inner.tos;
            outer.id = inner.id;
            outer.dont_fragment = inner.dont_fragment;
        }
        (Net::Ipv6(outer), Net::Ipv6(inner)) => {
            outer.hop_limit = ttl;
            outer.traffic_class = inner.traffic_class;
            outer.flow_label = h & FLOW_LABEL_MASK;
        }
        _ => panic!("not IP"),
    }
    out
}

/// A client packet `client -> v`, wrapped for `t`.
fn to_dsr_target(p: &Packet, client: SocketAddr, v: &VipDef, t: &TargetDef) -> Packet {
    wrapped(p, &flow_key(client, v.addr, v.proto), t)
}

/// The flow `client -> v` is pinned to `t` in `state`, marked dsr.
fn expect_dsr_flow(
    fx: &mut Fixture,
    client: SocketAddr,
    v: &VipDef,
    t: &TargetDef,
    state: FlowState,
) {
    let key = flow_key(client, v.addr, v.proto);
    let e = fx.flow(&key).expect("FLOWS entry");
    assert_eq!(
        (
            u32::from(e.target_id),
            u32::from(e.target_gen),
            u32::from(e.vip_id),
            e.state(),
            e.flags
        ),
        (t.id, t.generation, v.id, state, entry_flags::DSR),
        "FLOWS (target_id, target_gen, vip_id, state, flags)"
    );
}

/// A new dsr flow: its entry, one embryonic flow, the client's frame
/// counted in (as the client sent it) for the VIP and the target.
fn expect_new_dsr_flow(
    fx: &mut Fixture,
    client: SocketAddr,
    v: &VipDef,
    t: &TargetDef,
    frame_len: usize,
    state: FlowState,
) {
    expect_dsr_flow(fx, client, v, t, state);
    let key = flow_key(client, v.addr, v.proto);
    let e = fx.flow(&key).expect("FLOWS entry");
    assert_eq!(e.aux, flow_hash(&key), "FLOWS aux: the flow's hash");
    let f = fx.flow_counters(v.id);
    assert_eq!(
        (f.embryonic, f.confirmed),
        (1, 0),
        "FLOW_STATS (embryonic, confirmed)"
    );
    let len = u64::try_from(frame_len).expect("len");
    for (what, c) in [
        ("VIP", fx.vip_counters(v.id)),
        ("target", fx.target_counters(t.id)),
    ] {
        assert_eq!(
            (c.packets_in, c.bytes_in, c.new_flows, c.packets_out),
            (1, len, 1, 0),
            "{what} counters (packets_in, bytes_in, new_flows, packets_out)"
        );
    }
}

/// The "too big" answer to `orig` once wrapped: as [`too_big_reply`], but
/// the quoted packet is the client's untouched (no TTL was decremented on
/// it) and the MTU is the egress MTU less the outer header.
fn too_big_wrapped(orig: &Packet, egress_mtu: u16) -> Packet {
    let fam = Family::of(orig);
    let overhead = u16::try_from(fam.ip_header_len()).expect("header length");
    let mut r = too_big_reply(orig, egress_mtu - overhead);
    let body = {
        let mut b = orig.net.bytes();
        b.truncate(fam.icmp_quote());
        b
    };
    match r.l4_mut() {
        L4::Icmp(icmp) => icmp.body = body,
        other => panic!("not ICMP: {other:?}"),
    }
    r
}

pub(super) fn cases() -> Vec<Case> {
    let mut cases = Family::each(cases_for);
    new_flows(&mut cases);
    tracked_flows(&mut cases);
    too_big(&mut cases);
    ttl_and_table(&mut cases);
    icmp_errors(&mut cases);
    cases
}

/// The dsr cases that hold for both families.
fn cases_for(fam: Family) -> Vec<Case> {
    let (client, v, t) = (fam.client(), fam.dsr_vip(), fam.tcp_target());
    let mut cases = Vec::new();
    let syn = Packet::tcp(client, v.addr, SYN);
    let len = syn.build().len();
    cases.push(
        Case::new(
            format!(
                "dsr: SYN to an {fam} VIP is wrapped in {fam} ({}) to its target",
                fam.encap_name()
            ),
            &syn,
        )
        .redirect(&to_dsr_target(&syn, client, &v, &t), Stat::Forwarded)
        .check(move |fx, _| {
            expect_new_dsr_flow(fx, client, &v, &t, len, FlowState::Syn);
            assert_eq!(fx.flow_counters(v.id).syns, 1, "syns");
        }),
    );

    // A router on the client's path tells the VIP that the target's reply
    // (VIP -> client, sent by the target itself) was too big.
    let (_, icmp) = router_too_big(fam, &v);
    let key = flow_key(client, v.addr, PROTO_TCP);
    cases.push(
        Case::new(
            format!(
                "dsr: {} about a dsr flow goes to its target wrapped, unchanged",
                fam.too_big_name()
            ),
            &icmp,
        )
        .setup(move |fx| pin_flow(fx, client, &v, &t, 1, entry_flags::DSR))
        .redirect(&wrapped(&icmp, &key, &t), Stat::IcmpTranslated),
    );
    // The outer header comes from the hash the entry holds, not from the
    // key hashed again (an entry of an older data path holds 0: the cases
    // whose pinned entries hash their keys).
    let key = flow_key(client, v.addr, v.proto);
    let held = flow_hash(&key) ^ 0x0005_a5a5;
    let data = Packet::tcp(client, v.addr, PSH | ACK).payload(&[0x3c; 64]);
    cases.push(
        Case::new(
            format!("dsr: a tracked {fam} flow's outer header is made of the hash its entry holds"),
            &data,
        )
        .setup(move |fx| {
            fx.insert_flow(FlowEntry {
                aux: held,
                ..established(client, &v, &t, 1, entry_flags::DSR)
            })
        })
        .redirect(&wrapped_with(&data, held, key.family, &t), Stat::Forwarded),
    );
    cases
}

fn new_flows(cases: &mut Vec<Case>) {
    let client = with_port(CLIENT4, 5000);
    let udp = Packet::udp(client, V_DSR_UDP4.addr).payload(&[7; 33]);
    let len = udp.build().len();
    cases.push(
        Case::new(
            "dsr: UDP to an IPv4 VIP is wrapped, checksum untouched",
            &udp,
        )
        .redirect(
            &to_dsr_target(&udp, client, &V_DSR_UDP4, &T4),
            Stat::Forwarded,
        )
        .check(move |fx, _| expect_new_dsr_flow(fx, client, &V_DSR_UDP4, &T4, len, FlowState::New)),
    );
    let client6 = with_port(CLIENT6, 5000);
    let mut udp6 = Packet::udp(client6, V_DSR_UDP6.addr).payload(&[9; 101]);
    udp6.ipv6_mut().traffic_class = 0xb9;
    let len = udp6.build().len();
    cases.push(
        Case::new(
            "dsr: UDP to an IPv6 VIP is wrapped; the outer header keeps its traffic class",
            &udp6,
        )
        .redirect(
            &to_dsr_target(&udp6, client6, &V_DSR_UDP6, &T7),
            Stat::Forwarded,
        )
        .check(move |fx, _| {
            expect_new_dsr_flow(fx, client6, &V_DSR_UDP6, &T7, len, FlowState::New)
        }),
    );
    let mut marked = Packet::tcp(CLIENT4, V_DSR4.addr, SYN).dont_fragment();
    marked.ipv4_mut().tos = 0xb8;
    cases.push(
        Case::new("dsr: the outer IPv4 header copies TOS and DF", &marked).redirect(
            &to_dsr_target(&marked, CLIENT4, &V_DSR4, &T1),
            Stat::Forwarded,
        ),
    );
    let tagged = Packet::tcp(CLIENT4, V_DSR4.addr, SYN).vlan(42);
    cases.push(
        Case::new(
            "dsr: an 802.1Q-tagged SYN keeps its tag in front of the outer header",
            &tagged,
        )
        .redirect(
            &to_dsr_target(&tagged, CLIENT4, &V_DSR4, &T1),
            Stat::Forwarded,
        ),
    );
    let padded = Packet::tcp(CLIENT4, V_DSR4.addr, SYN).pad_to(60);
    // The padding stays at the end of the frame, after the outer packet.
    let expected = to_dsr_target(&padded, CLIENT4, &V_DSR4, &T1).pad_to(60 + 20);
    cases.push(
        Case::new(
            "dsr: a SYN padded to 60 bytes keeps its padding at the end",
            &padded,
        )
        .redirect(&expected, Stat::Forwarded),
    );
}

fn tracked_flows(cases: &mut Vec<Case>) {
    let data = Packet::tcp(CLIENT4, V_DSR4.addr, PSH | ACK).payload(&[0x5a; 333]);
    cases.push(
        Case::new(
            "dsr: a tracked flow stays on its target after the ring changed",
            &data,
        )
        .setup(|fx| {
            switch_ring(fx, &V_DSR4, &[T2.id]);
            pin_flow(fx, CLIENT4, &V_DSR4, &T1, 1, entry_flags::DSR);
        })
        .redirect(
            &to_dsr_target(&data, CLIENT4, &V_DSR4, &T1),
            Stat::Forwarded,
        )
        .check(|fx, _| {
            expect_dsr_flow(fx, CLIENT4, &V_DSR4, &T1, FlowState::Established);
            let c = fx.vip_counters(V_DSR4.id);
            assert_eq!(
                (c.packets_in, c.new_flows),
                (1, 0),
                "(packets_in, new_flows)"
            );
        }),
    );
    let data6 = Packet::tcp(CLIENT6, V_DSR6.addr, PSH | ACK).payload(&[0x5a; 200]);
    cases.push(
        Case::new("dsr: a tracked IPv6 flow is wrapped to its target", &data6)
            .setup(|fx| pin_flow(fx, CLIENT6, &V_DSR6, &T6, 1, entry_flags::DSR))
            .redirect(
                &to_dsr_target(&data6, CLIENT6, &V_DSR6, &T6),
                Stat::Forwarded,
            ),
    );
    // No reply passes a dsr balancer: the client's handshake ACK confirms.
    let ack = Packet::tcp(CLIENT4, V_DSR4.addr, ACK);
    cases.push(
        Case::new(
            "dsr: the client's ACK confirms a Syn flow without any reply",
            &ack,
        )
        .setup(|fx| {
            fx.insert_flow(FlowEntry {
                state: FlowState::Syn as u8,
                ..established(CLIENT4, &V_DSR4, &T1, 0, entry_flags::DSR)
            })
        })
        .redirect(&to_dsr_target(&ack, CLIENT4, &V_DSR4, &T1), Stat::Forwarded)
        .check(|fx, _| {
            expect_dsr_flow(fx, CLIENT4, &V_DSR4, &T1, FlowState::Established);
            assert_eq!(fx.flow_counters(V_DSR4.id).confirmed, 1, "confirmed");
        }),
    );
    let client = with_port(CLIENT4, 5000);
    let second = Packet::udp(client, V_DSR_UDP4.addr);
    cases.push(
        Case::new(
            "dsr: a UDP flow's second datagram does not confirm it (no reply passes here)",
            &second,
        )
        .setup(move |fx| {
            fx.insert_flow(FlowEntry {
                state: FlowState::New as u8,
                ..established(client, &V_DSR_UDP4, &T4, 0, entry_flags::DSR)
            })
        })
        .redirect(
            &to_dsr_target(&second, client, &V_DSR_UDP4, &T4),
            Stat::Forwarded,
        )
        .check(move |fx, _| {
            expect_dsr_flow(fx, client, &V_DSR_UDP4, &T4, FlowState::New);
            assert_eq!(fx.flow_counters(V_DSR_UDP4.id).confirmed, 0, "confirmed");
        }),
    );
    let rst = Packet::tcp(CLIENT4, V_DSR4.addr, RST | ACK);
    cases.push(
        Case::new(
            "dsr: a client RST makes an established entry closing and still reaches the target",
            &rst,
        )
        .setup(|fx| pin_flow(fx, CLIENT4, &V_DSR4, &T1, 1, entry_flags::DSR))
        .redirect(&to_dsr_target(&rst, CLIENT4, &V_DSR4, &T1), Stat::Forwarded)
        .check(|fx, _| {
            let e = fx
                .flow(&flow_key(CLIENT4, V_DSR4.addr, PROTO_TCP))
                .expect("FLOWS entry kept after a RST");
            assert_eq!(
                (u32::from(e.target_id), e.state(), e.flags),
                (
                    T1.id,
                    FlowState::Established,
                    entry_flags::DSR | entry_flags::RST
                ),
                "(target, state, flags)"
            );
        }),
    );
}

fn too_big(cases: &mut Vec<Case>) {
    // 1490 bytes of IP: fits the 1500-byte egress MTU as it is, not wrapped.
    let big = Packet::tcp(CLIENT4, V_DSR4.addr, ACK)
        .payload(&[0x42; 1450])
        .dont_fragment();
    cases.push(
        Case::new(
            "dsr: fits the MTU, not once wrapped: frag needed from the VIP with MTU 1480",
            &big,
        )
        .redirect(&too_big_wrapped(&big, 1500), Stat::TooBigSent),
    );
    let big6 = Packet::tcp(CLIENT6, V_DSR6.addr, ACK).payload(&[0x42; 1420]);
    cases.push(
        Case::new(
            "dsr: IPv6 too big once wrapped: packet too big from the VIP with MTU 1460",
            &big6,
        )
        .redirect(&too_big_wrapped(&big6, 1500), Stat::TooBigSent),
    );
    let big_df_off = Packet::tcp(CLIENT4, V_DSR4.addr, ACK).payload(&[0x42; 1450]);
    cases.push(
        Case::new(
            "dsr: too big once wrapped without DF: passed to the kernel wrapped (it may fragment the outer packet)",
            &big_df_off,
        )
        // No next hop was found: the Ethernet addresses are still the
        // client side's.
        .pass_as(
            &to_dsr_target(&big_df_off, CLIENT4, &V_DSR4, &T1)
                .macs(big_df_off.eth_src, big_df_off.eth_dst),
            Stat::PassMtu,
        ),
    );
}

fn ttl_and_table(cases: &mut Vec<Case>) {
    let syn = Packet::tcp(CLIENT4, V_DSR4.addr, SYN).ttl(1);
    cases.push(
        Case::new(
            "dsr: TTL 1 on a new flow: passed untouched (the kernel answers)",
            &syn,
        )
        .pass_unchanged(Stat::PassTtlExceeded),
    );
    let data6 = Packet::tcp(CLIENT6, V_DSR6.addr, ACK).ttl(1);
    cases.push(
        Case::new(
            "dsr: hop limit 1 on a tracked IPv6 flow: passed untouched",
            &data6,
        )
        .setup(|fx| pin_flow(fx, CLIENT6, &V_DSR6, &T5, 1, entry_flags::DSR))
        .pass_unchanged(Stat::PassTtlExceeded),
    );
    let syn = Packet::tcp(CLIENT4, V_DSR4.addr, SYN);
    let key = flow_key(CLIENT4, V_DSR4.addr, PROTO_TCP);
    cases.push(
        Case::new(
            "dsr: a new flow over sets full of confirmed flows is forwarded untracked",
            &syn,
        )
        .setup(move |fx| fill_sets(fx, &key, None))
        .redirect(&to_dsr_target(&syn, CLIENT4, &V_DSR4, &T1), Stat::Forwarded)
        .check(move |fx, _| {
            let f = fx.flow_counters(V_DSR4.id);
            assert_eq!((f.embryonic, f.untracked), (0, 1), "(embryonic, untracked)");
            assert!(fx.flow(&key).is_none(), "no entry");
        }),
    );
}

fn icmp_errors(cases: &mut Vec<Case>) {
    let (_, icmp) = router_too_big(Family::V4, &V_DSR4);
    cases.push(
        Case::new("dsr: ICMP about a dsr flow no entry holds: passed", &icmp)
            .pass_unchanged(Stat::PassIcmp),
    );
}
