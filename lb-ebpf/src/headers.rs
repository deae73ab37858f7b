//! Wire headers with natural alignment.
//!
//! Our own rather than network-types': that crate declares multi-byte fields
//! as byte arrays (alignment 1), which makes LLVM's BPF backend load
//! addresses and ports byte by byte. These structs use u16/u32 fields so each
//! is one load (see `frame.rs` on alignment). All fields are in network byte
//! order.

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Vlan {
    pub tci: u16,
    pub ether_type: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv4 {
    pub vihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub saddr: u32,
    pub daddr: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv6 {
    pub vtc_flow: u32,
    pub payload_len: u16,
    pub next_hdr: u8,
    pub hop_limit: u8,
    pub saddr: [u32; 4],
    pub daddr: [u32; 4],
}

/// Generic IPv6 extension header prefix (hop-by-hop, routing, dest opts).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv6Ext {
    pub next_hdr: u8,
    /// Length in 8-octet units, not counting the first 8.
    pub len: u8,
}

/// First 8 bytes of TCP and UDP: the ports, then the checksum's neighbour.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ports {
    pub source: u16,
    pub dest: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Tcp {
    pub source: u16,
    pub dest: u16,
    pub seq: u32,
    pub ack_seq: u32,
    /// Data offset, reserved bits and flags (FIN is bit 0 of the second byte).
    pub off_flags: u16,
    pub window: u16,
    pub check: u16,
    pub urg_ptr: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Udp {
    pub source: u16,
    pub dest: u16,
    pub len: u16,
    pub check: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Icmp {
    pub kind: u8,
    pub code: u8,
    pub check: u16,
    pub rest: u32,
}

pub const ETH_LEN: usize = 14;
pub const VLAN_LEN: usize = 4;
pub const IPV4_LEN: usize = 20;
pub const IPV6_LEN: usize = 40;
pub const ICMP_LEN: usize = 8;

pub const ETH_P_IP: u16 = 0x0800u16.to_be();
pub const ETH_P_IPV6: u16 = 0x86DDu16.to_be();
pub const ETH_P_8021Q: u16 = 0x8100u16.to_be();
pub const ETH_P_8021AD: u16 = 0x88A8u16.to_be();

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_DSTOPTS: u8 = 60;
pub const IPPROTO_ESP: u8 = 50;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_NONE: u8 = 59;
/// Further IPv6 extension headers (RFC 7045): recognised, not walked.
pub const IPPROTO_MOBILITY: u8 = 135;
pub const IPPROTO_HIP: u8 = 139;
pub const IPPROTO_SHIM6: u8 = 140;
pub const IPPROTO_EXPERIMENT1: u8 = 253;
pub const IPPROTO_EXPERIMENT2: u8 = 254;

/// `frag_off` bits in network order: more-fragments flag and offset mask.
pub const IP_MF: u16 = 0x2000u16.to_be();
pub const IP_OFFSET: u16 = 0x1FFFu16.to_be();

/// TCP flag bits within `off_flags` read as a native (little-endian) u16:
/// the flags byte is the second byte on the wire, i.e. the high byte here.
pub const TCP_FIN: u16 = 0x0100;
pub const TCP_SYN: u16 = 0x0200;
pub const TCP_RST: u16 = 0x0400;
pub const TCP_ACK: u16 = 0x1000;

/// Offsets of the checksum field inside the L4 header.
pub const TCP_CHECK_OFF: usize = 16;
pub const UDP_CHECK_OFF: usize = 6;
