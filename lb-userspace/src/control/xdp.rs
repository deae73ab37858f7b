//! The XDP data path as the control loop drives it: the loaded object, its
//! maps and the reconciler's view of them.
//!
//! Order on start: load the object (reusing pinned maps), recover the
//! control-plane view from those maps, apply the config, and only then attach
//! (or swap the program into the existing links), so the first packet a new
//! attachment sees already finds its VIPs. Dropping an `XdpPath` leaves
//! program, links and maps in place: forwarding continues without the daemon
//! and the next `lb run` takes over.
use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    time::Instant,
};

use lb_common::{
    FlowKey, Stat, TargetState, VipKey,
    flow::{ticks, timeout_ticks},
    vip::vip_flags,
};
use tracing::{info, warn};

use super::{
    apply_guard::{self, GuardedApplyError},
    command::{FlowReport, FlowsReport},
    reply_alarm::ReplyAlarm,
};
use crate::{
    bpf::{
        kernel_maps::{KernelMapError, KernelMaps},
        loader::{self, AttachMode, LoadError, LoadSpec},
    },
    clock,
    config::{Config, ReplyInterfaceCheck, XdpMode},
    net,
    state::{ApplyError, Changes, Plan, Reconciler},
};

#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Maps(#[from] KernelMapError),
    /// Reading the pinned maps back at start.
    #[error("programming the maps: {0}")]
    Recover(#[from] ApplyError),
    /// Writing them (a panic inside is one of these, see [`apply_guard`]).
    #[error("programming the maps: {0}")]
    Apply(#[from] GuardedApplyError),
}

pub fn load_spec(cfg: &Config) -> LoadSpec {
    LoadSpec {
        pin_dir: cfg.daemon.pin_dir.clone(),
        interfaces: cfg.daemon.interfaces.clone(),
        tc_interfaces: cfg.daemon.tc_interfaces.clone(),
        mode: match cfg.daemon.xdp_mode {
            XdpMode::Driver => AttachMode::Driver,
            XdpMode::Generic => AttachMode::Generic,
            XdpMode::Auto => AttachMode::Auto,
        },
        ring_size: cfg.daemon.maglev_table_size,
        max_vips: cfg.daemon.max_vips,
        flow_capacity: cfg.daemon.flow_capacity,
        reply_any_interface: cfg.daemon.reply_interface_check == ReplyInterfaceCheck::Off,
    }
}

/// A running XDP data path.
pub struct XdpPath {
    // Keeps the program loaded while we hold it (the links hold it too).
    _ebpf: aya::Ebpf,
    maps: KernelMaps,
    state: Reconciler,
    /// Replies the reply-interface check refused, told at most once a
    /// minute ([`ReplyAlarm`]).
    reply_alarm: ReplyAlarm,
}

impl XdpPath {
    /// Loads, programs `config` with `plan`, attaches.
    pub fn start(config: &Config, plan: &Plan) -> Result<Self, XdpError> {
        let spec = load_spec(config);
        let mut ebpf = loader::load(&spec)?;
        let mut maps = KernelMaps::new(&mut ebpf)?;
        let mut state = Reconciler::recover(&maps)?;
        let report = apply_guard::apply_plan(&mut state, &mut maps, config, plan)?;
        info!(%report, "maps programmed");
        let orphans = maps.purge_orphan_flows()?;
        if orphans > 0 {
            info!(orphans, "removed flows of VIPs that no longer exist");
        }
        // The counter before the program is attached: it may hold an
        // earlier daemon's counts, and whatever it counts after is ours.
        let reply_alarm = ReplyAlarm::starting_at(maps.stat(Stat::PassReplyInterface));
        loader::attach(&mut ebpf, &spec)?;
        Ok(Self {
            _ebpf: ebpf,
            maps,
            state,
            reply_alarm,
        })
    }

    /// Applies `config` with `plan`; deletes the flows of VIPs that went and
    /// of `released` targets (drained) that are no longer registered.
    pub fn apply(
        &mut self,
        config: &Config,
        plan: &Plan,
        released: &[SocketAddr],
    ) -> Result<Changes, XdpError> {
        let before: Vec<(SocketAddr, u32)> = released
            .iter()
            .filter_map(|ep| self.state.target_id(ep).map(|id| (*ep, id)))
            .collect();
        let modes_before = self.forwarding_modes();
        let changes = apply_guard::apply_plan(&mut self.state, &mut self.maps, config, plan)?;
        if changes.vips_removed > 0 {
            let purged = self.maps.purge_orphan_flows()?;
            info!(purged, "removed the flows of removed VIPs");
        }
        self.end_flows_of_switched_vips(&modes_before)?;
        let gone: HashSet<u32> = before
            .into_iter()
            .filter(|(ep, _)| self.state.target_id(ep).is_none())
            .map(|(_, id)| id)
            .collect();
        if !gone.is_empty() {
            let purged = self.maps.purge_target_flows(&gone)?;
            info!(
                purged,
                targets = gone.len(),
                "removed the flows of drained targets"
            );
        }
        Ok(changes)
    }

    /// Each VIP's forwarding mode: whether it is dsr.
    fn forwarding_modes(&self) -> HashMap<VipKey, bool> {
        self.state
            .vips()
            .map(|(k, m)| (*k, m.flags & vip_flags::DSR != 0))
            .collect()
    }

    /// Ends the flows of VIPs switched from nat to dsr. A nat flow left in
    /// place would keep being translated while its target's replies lose
    /// their translation (dsr groups have no `REPLIES` entries) and leave
    /// the host with the target's address: a stall, not a reset. Ended, its
    /// next packet takes dsr like a new flow and the target, which has no
    /// connection to the VIP for it, resets it at once. The other way needs
    /// nothing: a dsr flow stays encapsulated to its target (the entry says
    /// so) until it ends.
    fn end_flows_of_switched_vips(
        &mut self,
        before: &HashMap<VipKey, bool>,
    ) -> Result<(), XdpError> {
        let switched: HashSet<VipKey> = self
            .forwarding_modes()
            .into_iter()
            .filter(|(k, dsr)| *dsr && before.get(k) == Some(&false))
            .map(|(k, _)| k)
            .collect();
        if !switched.is_empty() {
            let purged = self.maps.purge_flows(|v| switched.contains(v))?;
            warn!(
                purged,
                vips = switched.len(),
                "forwarding changed from nat to dsr: ended those VIPs' nat flows"
            );
        }
        Ok(())
    }

    /// Connection-table occupancy and a sample with targets resolved.
    pub fn flows(&self, limit: usize) -> FlowsReport {
        let (active, sample) = self.maps.sample_flows(limit);
        let now = ticks(clock::monotonic_coarse_ns());
        let targets: HashMap<u32, SocketAddr> = self
            .state
            .targets()
            .filter_map(|(id, t)| net::target_endpoint(t).map(|ep| (id, ep)))
            .collect();
        let sample = sample
            .into_iter()
            .filter_map(|e| {
                let k = &e.key;
                Some(FlowReport {
                    client: endpoint(k, true)?,
                    vip: endpoint(k, false)?,
                    protocol: match k.proto {
                        lb_common::PROTO_UDP => "udp".into(),
                        _ => "tcp".into(),
                    },
                    target: targets.get(&u32::from(e.target_id)).copied(),
                    state: e.state().name().into(),
                    idle_s: u64::from(
                        lb_common::flow::age(now, e.last_seen).max(0) as u32
                            / timeout_ticks(1).max(1),
                    ),
                })
            })
            .collect();
        FlowsReport {
            entries: u64::from(self.maps.flows.capacity()),
            active,
            sample,
        }
    }

    /// How many replies the reply-interface check refused since the last
    /// warning, when a warning about them is due at `now`. An unreadable
    /// counter skips the look (a 0 would be taken for a reset, and the next
    /// good read for that many refusals).
    pub fn refused_replies(&mut self, now: Instant) -> Option<u64> {
        let total = self.maps.stat(Stat::PassReplyInterface)?;
        self.reply_alarm.observe(total, now)
    }

    /// Kernel state of a registered target (for reports).
    pub fn target_state(&self, ep: &SocketAddr) -> Option<TargetState> {
        let id = self.state.target_id(ep)?;
        self.state
            .targets()
            .find(|(i, _)| *i == id)
            .map(|(_, t)| TargetState::from_u8(t.state))
    }
}

/// Client (`src`) or VIP (`dst`) side of a flow key.
fn endpoint(k: &FlowKey, src: bool) -> Option<SocketAddr> {
    let (addr, port) = if src {
        (&k.src, k.sport)
    } else {
        (&k.dst, k.dport)
    };
    Some(SocketAddr::new(
        net::decode_addr(addr, k.family)?,
        u16::from_be(port),
    ))
}
