//! dsr's second chance (docs/datapath.md, "Second chance"): a TCP packet
//! that is not a SYN and has no entry, whose target in the previous table
//! (the other ring slot of the VIP's pair, `PREVIOUS_RING`) differs from
//! the live one, leaves wrapped twice: outer header to the live target,
//! second header to the previous one, then the client's packet untouched;
//! it is not pinned. Otherwise the ordinary single wrap. Expected frames are
//! built from the input's description, never copied from the program.
use lb_common::encap::{flow_label, outer_source};

use super::*;

/// Live ring slot of the switched VIPs; its pair [`PREVIOUS`] holds the
/// table before the switch (the pair differs in the lowest bit).
const LIVE: u32 = 14;
const PREVIOUS: u32 = 15;

/// Points `v` at ring [`LIVE`] = `live`, with [`PREVIOUS`] = `previous`,
/// and `flags` on top of the VIP's own.
fn switched(fx: &mut Fixture, v: &VipDef, live: &[u32], previous: &[u32], flags: u32) {
    fx.set_ring(LIVE, live);
    fx.set_ring(PREVIOUS, previous);
    let mut m = meta(v);
    m.ring_slot = LIVE;
    m.flags |= flags;
    m.generation += 1;
    fx.set_vip_meta(vip_key(v.addr, v.proto), m);
}

const BOTH: u32 = vip_flags::SECOND_CHANCE | vip_flags::PREVIOUS_RING;

fn ip(a: SocketAddr) -> IpAddr {
    a.ip()
}

/// `p` wrapped once more, to `dst`, from the flow's outer source, with
/// the fields dsr copies from the client's packet `client` (TTL less one,
/// TOS / traffic class, DF, IPv4 id, IPv6 flow label).
fn wrap(p: Packet, client: &Packet, key: &FlowKey, dst: IpAddr) -> Packet {
    let src = if key.family == lb_common::FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::from(u32::from_be(outer_source(key)[0])))
    } else {
        let mut b = [0u8; 16];
        for (i, w) in outer_source(key).iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(b))
    };
    let ttl = ttl_of(client) - 1;
    let mut out = p.encap(src, dst);
    match (&mut out.net, &client.net) {
        (Net::Ipv4(outer), Net::Ipv4(inner)) => {
            outer.ttl = ttl;
            outer.tos = inner.tos;
            outer.id = inner.id;
            outer.dont_fragment = inner.dont_fragment;
        }
        (Net::Ipv6(outer), Net::Ipv6(inner)) => {
            outer.hop_limit = ttl;
            outer.traffic_class = inner.traffic_class;
            outer.flow_label = flow_label(key);
        }
        _ => panic!("not IP"),
    }
    out
}

/// The chain: to `t`, inside to `prev`, inside the client's packet.
fn chained(p: &Packet, client: SocketAddr, v: &VipDef, t: &TargetDef, prev: &TargetDef) -> Packet {
    let key = flow_key(client, v.addr, v.proto);
    let once = wrap(p.clone(), p, &key, ip(prev.addr));
    wrap(once, p, &key, ip(t.addr)).macs(topo::FX0_MAC, t.mac)
}

/// The ordinary single wrap to `t`.
fn single(p: &Packet, client: SocketAddr, v: &VipDef, t: &TargetDef) -> Packet {
    let key = flow_key(client, v.addr, v.proto);
    wrap(p.clone(), p, &key, ip(t.addr)).macs(topo::FX0_MAC, t.mac)
}

/// No entry for the flow, and no new flow counted; the live target's
/// traffic counts the client's frame.
fn expect_unpinned(fx: &mut Fixture, client: SocketAddr, v: &VipDef, t: &TargetDef, len: usize) {
    let key = flow_key(client, v.addr, v.proto);
    assert!(fx.flow(&key).is_none(), "a chained flow must not be pinned");
    let c = fx.target_counters(t.id);
    assert_eq!(
        (c.packets_in, c.bytes_in as usize, c.new_flows),
        (1, len, 0),
        "live target's counters (packets_in, bytes_in, new_flows)"
    );
}

/// The flow is pinned to `t` (the ordinary path), unconfirmed.
fn expect_pinned(
    fx: &mut Fixture,
    client: SocketAddr,
    v: &VipDef,
    t: &TargetDef,
    state: FlowState,
) {
    let key = flow_key(client, v.addr, v.proto);
    let e = fx.flow(&key).expect("FLOWS entry");
    assert_eq!(
        (u32::from(e.target_id), e.state()),
        (t.id, state),
        "FLOWS (target_id, state)"
    );
}

pub(super) fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (fam, v, client, t, prev) in [
        ("IPv4", V_DSR4, CLIENT4, T1, T2),
        ("IPv6", V_DSR6, CLIENT6, T5, T6),
    ] {
        let ack = Packet::tcp(client, v.addr, ACK | PSH).payload(b"mid-connection");
        let len = ack.build().len();
        cases.push(
            Case::new(
                format!("second chance {fam}: ACK without entry, live and previous targets differ: chained to both, not pinned"),
                &ack,
            )
            .setup(move |fx| switched(fx, &v, &[t.id], &[prev.id], BOTH))
            .redirect(&chained(&ack, client, &v, &t, &prev), Stat::SecondChance)
            .check(move |fx, _| expect_unpinned(fx, client, &v, &t, len)),
        );
        cases.push(
            Case::new(
                format!("second chance {fam}: same target in both tables: the ordinary single wrap, pinned"),
                &ack,
            )
            .setup(move |fx| switched(fx, &v, &[t.id], &[t.id], BOTH))
            .redirect(&single(&ack, client, &v, &t), Stat::Forwarded)
            .check(move |fx, _| expect_pinned(fx, client, &v, &t, FlowState::New)),
        );
        let syn = Packet::tcp(client, v.addr, SYN);
        cases.push(
            Case::new(
                format!("second chance {fam}: a SYN never chains: new flow on the live target"),
                &syn,
            )
            .setup(move |fx| switched(fx, &v, &[t.id], &[prev.id], BOTH))
            .redirect(&single(&syn, client, &v, &t), Stat::Forwarded)
            .check(move |fx, _| expect_pinned(fx, client, &v, &t, FlowState::Syn)),
        );
        cases.push(
            Case::new(
                format!("second chance {fam}: turned off (no SECOND_CHANCE): single wrap"),
                &ack,
            )
            .setup(move |fx| switched(fx, &v, &[t.id], &[prev.id], vip_flags::PREVIOUS_RING))
            .redirect(&single(&ack, client, &v, &t), Stat::Forwarded),
        );
        cases.push(
            Case::new(
                format!(
                    "second chance {fam}: no previous table (PREVIOUS_RING clear): single wrap"
                ),
                &ack,
            )
            .setup(move |fx| switched(fx, &v, &[t.id], &[prev.id], vip_flags::SECOND_CHANCE))
            .redirect(&single(&ack, client, &v, &t), Stat::Forwarded),
        );
    }
    let udp = Packet::udp(CLIENT4, V_DSR_UDP4.addr);
    cases.push(
        Case::new("second chance: UDP never chains", &udp)
            .setup(|fx| switched(fx, &V_DSR_UDP4, &[T4.id], &[T10.id], BOTH))
            .redirect(&single(&udp, CLIENT4, &V_DSR_UDP4, &T4), Stat::Forwarded),
    );
    // A previous target that no longer keeps flows is not chained to.
    let ack = Packet::tcp(CLIENT4, V_DSR4.addr, ACK);
    cases.push(
        Case::new("second chance: previous target Down: single wrap", &ack)
            .setup(|fx| {
                switched(fx, &V_DSR4, &[T1.id], &[T2.id], BOTH);
                let mut t2 = fx.get_target(T2.id);
                t2.state = TargetState::Down as u8;
                fx.set_target(T2.id, t2);
            })
            .redirect(&single(&ack, CLIENT4, &V_DSR4, &T1), Stat::Forwarded),
    );
    cases
}
