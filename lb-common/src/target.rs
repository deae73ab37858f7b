//! Targets: where a VIP's flows go.
use crate::Addr;

/// Health/lifecycle state as the data path sees it.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetState {
    /// Slot is free; flows pinned to it are re-balanced on their next packet.
    Unused = 0,
    /// Receives new and existing flows.
    Active = 1,
    /// Keeps existing flows, gets no new ones (deregistration delay, or an
    /// unhealthy target whose group keeps connections).
    Draining = 2,
    /// Registered but down (unhealthy, connection termination on): gets no
    /// new flows, and flows pinned to it are re-balanced on their next
    /// packet. Unlike `Unused` the id stays with the target, so it comes back
    /// with the same id and generation when healthy again.
    Down = 3,
}

impl TargetState {
    /// Whether flows already pinned to a target in this state stay there.
    pub const fn keeps_flows(self) -> bool {
        matches!(self, Self::Active | Self::Draining)
    }

    pub const fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Active,
            2 => Self::Draining,
            3 => Self::Down,
            _ => Self::Unused,
        }
    }
}

/// One entry of `TARGETS`, indexed by target id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Target {
    pub addr: Addr,
    /// Network byte order.
    pub port: u16,
    pub family: u8,
    /// `TargetState as u8`.
    pub state: u8,
    /// Bumped whenever the id is given to a different target, so a flow that
    /// was pinned to the previous holder (its `FlowValue::target_gen` differs)
    /// is never sent to the new one.
    pub generation: u32,
}

const _: () = assert!(core::mem::size_of::<Target>() == 24);
