//! `aya::Pod` for every map key and value, so user space can read and write them.
use crate::*;

// SAFETY: each type is repr(C), has only integer fields and explicit padding,
// so every bit pattern is valid and there are no implicit padding bytes.
unsafe impl aya::Pod for VipKey {}
unsafe impl aya::Pod for VipAddrKey {}
unsafe impl aya::Pod for VipMeta {}
unsafe impl aya::Pod for Target {}
unsafe impl aya::Pod for FlowKey {}
unsafe impl aya::Pod for FlowEntry {}
unsafe impl aya::Pod for flow::SetMeta {}
unsafe impl aya::Pod for ReplyKey {}
unsafe impl aya::Pod for ReplyTargets {}
unsafe impl aya::Pod for DataPathConfig {}
unsafe impl aya::Pod for Counters {}
unsafe impl aya::Pod for FlowCounters {}
unsafe impl aya::Pod for NextHopKey {}
unsafe impl aya::Pod for NextHop {}
unsafe impl aya::Pod for TargetHop {}
unsafe impl aya::Pod for ReplyRoute {}
unsafe impl aya::Pod for decap::DecapSaved {}
