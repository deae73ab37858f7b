//! The fixture tables of nat forwarding, returns and ICMP through `lb_tc`,
//! the data path compiled for tc: the same input frames must give the same
//! output bytes, verdicts and counters as through `lb_xdp`. A test run's
//! socket buffer is `CHECKSUM_NONE` (complete checksums in the bytes), so
//! `bpf_l4_csum_replace` must reach exactly the bytes the XDP arithmetic
//! does. (Partial checksums, which a test run cannot make, are covered by
//! tests/tests/local_clients.rs with real stacks.)
//!
//! What differs at tc by design (docs/datapath.md, "Clients on the
//! balancer host"): no generated ICMP error, so a packet too big for the
//! target side is passed to the kernel (`pass_mtu`, output not compared);
//! a next hop without a resolved neighbour is redirected with
//! `bpf_redirect_neigh` rather than passed.
use lb_common::Stat;
use lb_tests::fixture::{
    self, RunResult, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, XDP_DROP, XDP_PASS, XDP_REDIRECT,
    topo,
};
use lb_tests::packet::{Packet, tcp_flags::*};

use super::{
    CLIENT4, Case, Hook, T1, V_TCP4, forward_cases, icmp_cases, return_cases, run_table_at, send,
    world,
};

/// A tc result as the XDP action it stands for; any other tc action as a
/// value no case expects.
pub(super) fn as_xdp(r: RunResult) -> RunResult {
    let action = match r.action {
        TC_ACT_OK => XDP_PASS,
        TC_ACT_SHOT => XDP_DROP,
        TC_ACT_REDIRECT => XDP_REDIRECT,
        other => 1000 + other,
    };
    RunResult { action, ..r }
}

/// `cases` with the expectations of tc where they differ.
fn at_tc(cases: Vec<Case>) -> Vec<Case> {
    cases
        .into_iter()
        .map(|mut c| {
            if c.expect_stat == Stat::PassNoNeighbour {
                // Passing would not do at egress: the kernel resolves the
                // neighbour for the redirect (`bpf_redirect_neigh`); the
                // bytes are the same rewritten packet.
                c.description = format!("{} (tc: bpf_redirect_neigh)", c.description);
                c.expect_action = XDP_REDIRECT;
            }
            if c.expect_stat == Stat::TooBigSent {
                c.description = format!("{} (tc: left to the kernel)", c.description);
                c.expect_stat = Stat::PassMtu;
                c.expect_action = XDP_PASS;
                c.expect_output = None;
                c.check = None;
            }
            c
        })
        .collect()
}

#[test]
fn forward_at_tc() {
    run_table_at(|| at_tc(forward_cases()), Hook::Tc);
}

#[test]
fn return_path_at_tc() {
    run_table_at(|| at_tc(return_cases()), Hook::Tc);
}

#[test]
fn icmp_at_tc() {
    run_table_at(|| at_tc(icmp_cases()), Hook::Tc);
}

/// The reply-interface check at tc egress, where a buffer is on its way
/// out: one the kernel forwarded is judged by the interface it came in by
/// (a forged reply the XDP program passed on the clients' side, which the
/// kernel then forwarded toward a `tc_interfaces` device, is not
/// translated there either); one this host's stack sent is not checked.
/// The route to the targets leaves by fx0.
#[test]
fn the_reply_check_at_tc_egress() {
    fixture::with_netns(|| {
        let syn = Packet::tcp(CLIENT4, V_TCP4.addr, SYN);
        let synack = Packet::tcp(T1.addr, CLIENT4, SYN | ACK).build();
        // (leaving by, came in by, ...): each buffer leaves by another
        // interface than the one it came in by.
        for (out, from, ingress, action, stat) in [
            (
                topo::FX0,
                "forwarded from fx1",
                topo::ifindex(topo::FX1),
                TC_ACT_OK,
                Stat::PassReplyInterface,
            ),
            (
                topo::FX1,
                "forwarded from fx0",
                topo::ifindex(topo::FX0),
                TC_ACT_REDIRECT,
                Stat::Returned,
            ),
            (
                topo::FX1,
                "sent by this host",
                0,
                TC_ACT_REDIRECT,
                Stat::Returned,
            ),
        ] {
            let mut fx = world();
            fx.load_tc();
            fx.set_config_flags(0);
            send(&mut fx, &syn);
            let before = fx.stats()[stat as usize];
            let r = fx.run_tc_as(&synack, out, ingress);
            assert_eq!(r.action, action, "a reply at tc egress of {out}, {from}");
            assert_eq!(fx.stats()[stat as usize], before + 1, "{stat:?}, {from}");
        }
    });
}

/// A forged reply too big for the targets' side, at tc: its route lookup
/// must not decide the cached route (the tc helper checks a buffer's own
/// size when the lookup gives no length, and would answer "fragmentation
/// needed"), or the target's own replies after it would be refused.
#[test]
fn a_large_forged_reply_at_tc_does_not_decide_the_route() {
    fixture::with_netns(|| {
        let mut fx = world();
        fx.load_tc();
        fx.set_config_flags(0);
        send(&mut fx, &Packet::tcp(CLIENT4, V_TCP4.addr, SYN));
        let forged = Packet::tcp(T1.addr, CLIENT4, SYN | ACK)
            .payload(&[0; 2000])
            .build();
        let r = fx.run_tc_on(&forged, topo::FX1);
        assert_eq!(r.action, TC_ACT_OK, "the forged reply is passed");
        let real = Packet::tcp(T1.addr, CLIENT4, SYN | ACK).build();
        let r = fx.run_tc_on(&real, topo::FX0);
        assert_eq!(
            r.action, TC_ACT_REDIRECT,
            "the target's own reply after it is translated"
        );
    });
}
