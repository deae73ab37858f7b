//! Layouts shared by the XDP program and the daemon: map names, limits, and the
//! `#[repr(C)]` key and value types of every map. Nothing here is kept in sync by
//! hand elsewhere; both sides compile against these definitions.
//!
//! Byte order: addresses and ports are stored exactly as they appear on the
//! wire (network byte order), so the data path never swaps bytes. IPv4
//! addresses occupy `addr[0]`, the other three words are zero.
#![no_std]

pub mod counters;
pub mod decap;
pub mod encap;
pub mod flow;
pub mod hash;
pub mod limits;
pub mod maps;
pub mod nexthop;
#[cfg(feature = "user")]
mod pod;
pub mod probe;
pub mod target;
pub mod vip;

pub use counters::{Counters, FlowCounters, Stat};
pub use flow::{DataPathConfig, FlowEntry, FlowKey, FlowState, ReplyKey, ReplyTargets, VipRef};
pub use nexthop::{NextHop, NextHopKey, ReplyRoute, TargetHop};
pub use target::{Target, TargetState};
pub use vip::{VipAddrKey, VipKey, VipMeta};

/// Address family tag used in keys (`AF_INET` / `AF_INET6` values).
pub const FAMILY_V4: u8 = 2;
pub const FAMILY_V6: u8 = 10;

/// IP protocol numbers used in keys.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// An address in network byte order; IPv4 uses the first word only.
pub type Addr = [u32; 4];
