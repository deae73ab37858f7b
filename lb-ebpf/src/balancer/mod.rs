//! The load balancer's data path (`lb_xdp`, and `lb_tc` at tc: `hook`
//! says what differs), split by concern:
//! `dispatch` (what kind of packet this is), `conntrack` (the connection
//! table), `maglev` (target choice), `nat` (address translation), `encap`
//! (dsr's outer header), `icmp`
//! (errors about flows), `too_big` (errors we generate), `fib` (next hop),
//! `stats`, `maps`, `clock`. What happens to each kind of packet is
//! specified in docs/datapath.md.
mod clock;
mod conntrack;
mod dispatch;
mod encap;
mod fib;
mod hook;
mod icmp;
mod maglev;
mod maps;
mod nat;
mod scratch;
mod stats;
mod too_big;

use aya_ebpf::bindings::xdp_action;
use lb_common::{PROTO_TCP, Stat};
use lb_ebpf::{
    frame::{Frame, load},
    headers::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Tcp},
    parse::{Packet, ParseError},
};

pub use dispatch::handle;
pub use hook::tc_action;
pub use stats::count;

/// Bytes of headers the tc entry point makes directly readable: Ethernet
/// with a tag, IPv6 with extension headers, TCP with options.
pub const HEADERS: u32 = 256;

/// Outcome of handling a packet: the XDP action and the stat that explains it.
pub struct Verdict {
    pub action: u32,
    pub stat: Stat,
}

impl Verdict {
    #[inline(always)]
    pub const fn pass(stat: Stat) -> Self {
        Self {
            action: xdp_action::XDP_PASS,
            stat,
        }
    }
    #[inline(always)]
    pub const fn drop(stat: Stat) -> Self {
        Self {
            action: xdp_action::XDP_DROP,
            stat,
        }
    }
}

impl Verdict {
    /// As one register: what an out-of-line function (a BPF-to-BPF call)
    /// returns, since a struct would come back through a stack pointer,
    /// which the verifier refuses.
    #[inline(always)]
    pub const fn pack(self) -> u64 {
        self.action as u64 | (self.stat as u64) << 32
    }

    #[inline(always)]
    pub const fn unpack(v: u64) -> Self {
        Self {
            action: v as u32,
            stat: Stat::from_u32((v >> 32) as u32),
        }
    }
}

impl From<ParseError> for Verdict {
    #[inline(always)]
    fn from(e: ParseError) -> Self {
        Verdict::pass(match e {
            ParseError::Malformed => Stat::PassMalformed,
            ParseError::NotIp => Stat::PassNotIp,
            ParseError::VlanStack => Stat::PassVlanStack,
            ParseError::Ipv6Ext => Stat::PassIpv6Ext,
        })
    }
}

/// What connection tracking needs of a TCP header (all false for UDP).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    /// Sequence number, host byte order.
    pub seq: u32,
    /// Acknowledgement number, host byte order.
    pub ack_seq: u32,
}

impl TcpFlags {
    /// The packet's flags; the caller checked that the TCP header is whole.
    #[inline(always)]
    pub fn of(f: &impl Frame, p: &Packet) -> Self {
        if p.proto != PROTO_TCP {
            return Self::default();
        }
        let Some(tcp) = load::<Tcp>(f, p.l4) else {
            return Self::default();
        };
        let bits = tcp.off_flags;
        Self {
            syn: bits & TCP_SYN != 0,
            ack: bits & TCP_ACK != 0,
            fin: bits & TCP_FIN != 0,
            rst: bits & TCP_RST != 0,
            seq: u32::from_be(tcp.seq),
            ack_seq: u32::from_be(tcp.ack_seq),
        }
    }

    /// A connection's first packet.
    #[inline(always)]
    pub fn opens(&self) -> bool {
        self.syn && !self.ack
    }
}
