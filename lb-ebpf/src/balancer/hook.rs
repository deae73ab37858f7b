//! What differs between the two hooks the balancer runs at; the rest of
//! `balancer` is written once, generic over [`Hook`].
//!
//! - XDP (`lb_xdp`): a frame before the kernel made a socket buffer of it.
//!   Fastest, but a frame sent by a local stack (a container's veth, with
//!   checksum offload on) carries only a partial transport checksum, which
//!   the bytes alone do not tell, and a redirect drops the state that says
//!   so: such a packet reaches its target with a bad checksum.
//! - tc (`lb_tc`, ingress and egress): a socket buffer whose checksum state
//!   (`CHECKSUM_PARTIAL`, `COMPLETE`, `NONE`, `UNNECESSARY`) the kernel
//!   knows. Transport checksums are updated by `bpf_l4_csum_replace`, which
//!   does the right thing for each state, and a redirected buffer keeps its
//!   state (and its segmentation offload) to the next device.
use aya_ebpf::{
    bindings::{
        BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, xdp_action,
    },
    helpers::{bpf_redirect, bpf_redirect_neigh, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::{TcContext, XdpContext},
};
use lb_common::PROTO_TCP;
use lb_ebpf::{
    csum::{Delta, apply},
    frame::{Frame, update},
    headers::{TCP_CHECK_OFF, UDP_CHECK_OFF},
    parse::Packet,
};

/// `bpf_l4_csum_replace`: the packet is IPv6 (its addresses are not
/// covered by a `CHECKSUM_COMPLETE` sum's IP header checksum; Linux 6.16+).
const BPF_F_IPV6: u64 = 1 << 7;

/// A packet context the balancer runs on.
pub trait Hook: Frame {
    /// Whether the frame can grow and shrink: dsr's outer header and the
    /// ICMP errors generated in `too_big` need it. At tc they do not run
    /// (see the impl).
    const RESIZES: bool;

    /// `bpf_xdp_adjust_head`: moves the start by `delta` bytes.
    fn adjust_head(&self, delta: i32) -> bool;

    /// `bpf_xdp_adjust_tail`: moves the end by `delta` bytes.
    fn adjust_tail(&self, delta: i32) -> bool;

    /// Sends the packet out of `ifindex`; returns the XDP action for it
    /// (the tc entry point maps XDP actions to tc ones).
    fn redirect(&self, ifindex: u32) -> u32;

    /// The translated packet's next hop on `ifindex` has no resolved
    /// neighbour: the XDP action that gets it there.
    fn unresolved(&self, ifindex: u32) -> u32;

    /// The interface a FIB lookup starts from (the one the packet is on).
    fn route_if(&self) -> u32;

    /// The interface the packet came in by from the network; `None` for a
    /// packet of this host's own stack.
    fn wire_if(&self) -> Option<u32>;

    /// The length the FIB lookup checks against the egress MTU, for an IP
    /// packet of `ip_len` bytes; 0 lets the kernel check the buffer itself.
    fn mtu_len(&self, ip_len: u16) -> u16;

    /// Updates the transport checksum of `p` for a change of the addresses
    /// in its pseudo-header (`addr`) and of a port (`port`).
    fn l4_csum(&self, p: &Packet, addr: Delta, port: Delta) -> Option<()>;
}

impl Hook for XdpContext {
    const RESIZES: bool = true;

    #[inline(always)]
    fn adjust_head(&self, delta: i32) -> bool {
        // SAFETY: the helper only moves the frame's start; every access after
        // it goes through `frame`'s bounds checks again.
        unsafe { bpf_xdp_adjust_head(self.ctx, delta) == 0 }
    }

    #[inline(always)]
    fn adjust_tail(&self, delta: i32) -> bool {
        // SAFETY: as in `adjust_head`, for the frame's end.
        unsafe { bpf_xdp_adjust_tail(self.ctx, delta) == 0 }
    }

    #[inline(always)]
    fn redirect(&self, ifindex: u32) -> u32 {
        // SAFETY: the helper has no preconditions.
        unsafe { bpf_redirect(ifindex, 0) as u32 }
    }

    #[inline(always)]
    fn unresolved(&self, _ifindex: u32) -> u32 {
        // The kernel forwards it, resolving the neighbour on the way.
        xdp_action::XDP_PASS
    }

    #[inline(always)]
    fn route_if(&self) -> u32 {
        self.ingress_if()
    }

    #[inline(always)]
    fn wire_if(&self) -> Option<u32> {
        Some(self.ingress_if())
    }

    #[inline(always)]
    fn mtu_len(&self, ip_len: u16) -> u16 {
        ip_len
    }

    #[inline(always)]
    fn l4_csum(&self, p: &Packet, addr: Delta, port: Delta) -> Option<()> {
        // The bytes are all there is: the field holds a complete checksum.
        let mut d = addr;
        d.merge(port);
        if p.proto == PROTO_TCP {
            update::<u16, _>(self, p.l4 + TCP_CHECK_OFF, |check| {
                *check = apply(*check, d)
            })
        } else {
            update::<u16, _>(self, p.l4 + UDP_CHECK_OFF, |check| {
                // IPv4 UDP may go without a checksum; IPv6 UDP may not.
                if *check == 0 && !p.v6 {
                    return;
                }
                let new = apply(*check, d);
                *check = if new == 0 { 0xffff } else { new };
            })
        }
    }
}

impl Hook for TcContext {
    /// Not at tc: a buffer's checksum offsets and segmentation state would
    /// have to move with the bytes. A dsr packet is dropped
    /// (`drop_malformed`) and a packet too big for the target side is
    /// handed to the kernel (`pass_mtu`); docs/datapath.md.
    const RESIZES: bool = false;

    #[inline(always)]
    fn adjust_head(&self, _delta: i32) -> bool {
        false
    }

    #[inline(always)]
    fn adjust_tail(&self, _delta: i32) -> bool {
        false
    }

    #[inline(always)]
    fn redirect(&self, ifindex: u32) -> u32 {
        // SAFETY: the helper has no preconditions.
        if unsafe { bpf_redirect(ifindex, 0) } == TC_ACT_REDIRECT as i64 {
            xdp_action::XDP_REDIRECT
        } else {
            xdp_action::XDP_ABORTED
        }
    }

    #[inline(always)]
    fn unresolved(&self, ifindex: u32) -> u32 {
        // Passing it on would not do at egress (it would leave by the
        // interface it came to, translated): the kernel resolves the
        // neighbour for the redirect itself.
        // SAFETY: no parameters (null, 0): the kernel looks the next hop up.
        let rc = unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) };
        if rc == TC_ACT_REDIRECT as i64 {
            xdp_action::XDP_REDIRECT
        } else {
            xdp_action::XDP_ABORTED
        }
    }

    #[inline(always)]
    fn route_if(&self) -> u32 {
        // At egress (the host's own packets) there is no ingress interface:
        // the lookup starts from the device the packet is leaving by.
        // SAFETY: `skb` is the kernel's `__sk_buff` for this run.
        unsafe { (*self.skb.skb).ifindex }
    }

    #[inline(always)]
    fn wire_if(&self) -> Option<u32> {
        // At ingress, the device the buffer is on; at egress, the one a
        // forwarded buffer came in by (a forged reply the XDP program
        // passed on another interface, which the kernel forwarded here, is
        // judged by that), or none for the host's own packets.
        // SAFETY: `skb` is the kernel's `__sk_buff` for this run.
        let ingress = unsafe { (*self.skb.skb).ingress_ifindex };
        (ingress != 0).then_some(ingress)
    }

    #[inline(always)]
    fn mtu_len(&self, ip_len: u16) -> u16 {
        // A segmentation-offload buffer is larger than the MTU by design;
        // the kernel then checks it as it would forward it (per segment).
        // SAFETY: as in `route_if`.
        if unsafe { (*self.skb.skb).gso_size } != 0 {
            0
        } else {
            ip_len
        }
    }

    #[inline(always)]
    fn l4_csum(&self, p: &Packet, addr: Delta, port: Delta) -> Option<()> {
        let (at, udp) = if p.proto == PROTO_TCP {
            (p.l4 + TCP_CHECK_OFF, 0)
        } else {
            // A zero IPv4 UDP checksum stays zero, a result of zero is sent
            // as 0xffff.
            (p.l4 + UDP_CHECK_OFF, BPF_F_MARK_MANGLED_0 as u64)
        };
        let v6 = if p.v6 { BPF_F_IPV6 } else { 0 };
        // Size 0: `to` is a ready one's-complement difference. The kernel
        // applies a pseudo-header change to a partial checksum's seed, to a
        // complete one and to `skb->csum` as each needs.
        let pseudo = udp | v6 | BPF_F_PSEUDO_HDR as u64;
        self.l4_csum_replace(at, 0, addr.sum32() as u64, pseudo)
            .ok()?;
        // A port is payload to a partial checksum: left to the device.
        self.l4_csum_replace(at, 0, port.sum32() as u64, udp).ok()
    }
}

/// The tc action for an XDP action of the shared code.
#[inline(always)]
pub fn tc_action(xdp: u32) -> i32 {
    match xdp {
        xdp_action::XDP_PASS => TC_ACT_OK,
        xdp_action::XDP_REDIRECT => TC_ACT_REDIRECT,
        _ => TC_ACT_SHOT,
    }
}
