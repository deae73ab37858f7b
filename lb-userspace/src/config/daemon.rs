//! `[daemon]`: host-level settings.
use std::path::PathBuf;

use lb_common::limits;
use serde::Deserialize;

use super::{DEFAULT_MAX_VIPS, DEFAULT_PIN_DIR};

/// `[daemon]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Daemon {
    /// Interfaces the XDP program is attached to, client- and target-facing
    /// alike (it handles both directions). Required, non-empty, unless
    /// `dataplane = "userspace"`.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Interfaces the same data path is attached to at tc (ingress and
    /// egress) instead of XDP: those that carry packets of a local stack,
    /// such as the host side of a container's veth, or the interface the
    /// host's own connections to a VIP leave by. Slower than XDP, but
    /// correct with checksum offload on (docs/config.md). An interface is
    /// in one list or the other; the two together must not be empty
    /// (unless `dataplane = "userspace"`).
    #[serde(default)]
    pub tc_interfaces: Vec<String>,
    /// Which path serves `tcp` and `udp` listeners.
    #[serde(default)]
    pub dataplane: Dataplane,
    /// How the program is attached.
    #[serde(default)]
    pub xdp_mode: XdpMode,
    /// bpffs directory holding the pinned program, links and maps.
    #[serde(default = "default_pin_dir")]
    pub pin_dir: PathBuf,
    /// Slots of each VIP's Maglev table; prime, within [`MAGLEV_TABLE_SIZE`].
    #[serde(default = "default_maglev_table_size")]
    pub maglev_table_size: u32,
    /// Flows the connection table holds (one entry for both directions,
    /// rounded up to a power of two); within [`FLOW_CAPACITY`].
    #[serde(default = "default_flow_capacity")]
    pub flow_capacity: u32,
    /// VIPs the maps are sized for (the Maglev map holds two tables per VIP);
    /// within [`MAX_VIPS`].
    #[serde(default = "default_max_vips")]
    pub max_vips: u32,
    /// Availability zone of this load-balancer host; target groups with
    /// `cross_zone = false` prefer targets of this zone.
    #[serde(default)]
    pub zone: Option<String>,
    /// Threads serving the userspace listeners' connections
    /// ([`crate::workers`]); 0: one per CPU.
    #[serde(default)]
    pub worker_threads: u32,
    /// Whether a nat target's reply must come in by the interface the route
    /// to the target leaves by before it is translated.
    #[serde(default)]
    pub reply_interface_check: ReplyInterfaceCheck,
}

fn default_pin_dir() -> PathBuf {
    PathBuf::from(DEFAULT_PIN_DIR)
}
fn default_maglev_table_size() -> u32 {
    limits::DEFAULT_RING_SIZE
}
fn default_flow_capacity() -> u32 {
    limits::DEFAULT_FLOW_CAPACITY
}
fn default_max_vips() -> u32 {
    DEFAULT_MAX_VIPS
}

/// `daemon.xdp_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native XDP in the driver: fastest; attaching fails if unsupported.
    #[default]
    Driver,
    /// Generic (skb) XDP: works on any device, at kernel-stack speed.
    Generic,
    /// Driver mode, falling back to generic with a warning.
    Auto,
}

/// `daemon.reply_interface_check`: a reverse-path check on what comes from
/// nat targets' side, which XDP sees before the kernel's own `rp_filter`
/// could (docs/config.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyInterfaceCheck {
    /// A reply of a live flow (or an ICMP error about a packet sent to a
    /// target) is translated only when it came in by the interface the
    /// route to the target leaves by; else the kernel gets it untranslated
    /// (`pass_reply_interface`). A sender on another network that forges a
    /// target's address can then neither confirm flows it spoofed nor
    /// write into real ones.
    #[default]
    Strict,
    /// No check: for targets whose replies rightly come in by another
    /// interface than the one route the FIB names (multipath, asymmetric or
    /// policy routing, VRFs, programs on a bond's members or a VLAN
    /// device's parent).
    Off,
}

/// `daemon.dataplane`: who serves `tcp` and `udp` listeners. `tls`, `http`
/// and `https` listeners are always served by the daemon's sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dataplane {
    /// The XDP program; failing to load or attach it stops the daemon.
    #[default]
    Xdp,
    /// No XDP program at all: a TCP proxy in the daemon serves `tcp`
    /// listeners and a UDP relay `udp` ones, whose addresses must then be
    /// local to the host.
    Userspace,
    /// XDP, else (no privileges, unsupported device) the userspace proxy
    /// and relay, with a warning giving the reason.
    Auto,
}
