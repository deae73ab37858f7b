//! The control loop's reports: what `lb status`, `lb listeners`,
//! `lb target-groups`, `lb targets`, `lb flows` and `lb stats` show, read
//! from the loop's state without changing it.
use std::time::Instant;

use super::{
    command::{
        CountersReport, FlowReport, FlowsReport, ListenerReport, StatsReport, StatusReport,
        TargetGroupReport, TargetHealthReport,
    },
    controller::{ConfiguredChecks, Controller},
    error::ControlError,
    verbs,
};
use crate::{
    bpf::stats,
    config::{Config, VipOwners},
    error_chain::ErrorChain,
    net,
};

impl Controller {
    pub(super) fn status(&self) -> StatusReport {
        let c = &self.config;
        let (mut healthy, mut unhealthy) = (0, 0);
        for g in &c.target_groups {
            let (h, u, _) = self.lifecycle.counts(&g.name);
            healthy += h;
            unhealthy += u;
        }
        StatusReport {
            version: env!("CARGO_PKG_VERSION").into(),
            config: self.path.display().to_string(),
            dataplane: if self.xdp.is_some() {
                "xdp"
            } else {
                "userspace"
            }
            .into(),
            zone: c.daemon.zone.clone(),
            listeners: c.listeners.len(),
            target_groups: c.target_groups.len(),
            targets: c.summary().targets,
            healthy,
            unhealthy,
            uptime_s: self.started.elapsed().as_secs(),
            last_reload: self.last_reload.clone(),
            drained: self.announcer.drained(),
            announced: self.announcer.announced().collect(),
        }
    }

    pub(super) fn listeners(&self) -> Vec<ListenerReport> {
        self.config
            .listeners
            .iter()
            .map(|l| ListenerReport {
                name: l.name.clone(),
                protocol: l.protocol.to_string(),
                address: l.address,
                port: l.port,
                target_groups: l
                    .referenced_groups()
                    .into_iter()
                    .map(String::from)
                    .collect(),
                deletion_protection: l.deletion_protection,
                served_by: if l.protocol.in_kernel() && self.xdp.is_some() {
                    "xdp"
                } else {
                    "userspace"
                }
                .into(),
            })
            .collect()
    }

    pub(super) fn target_groups(&self) -> Vec<TargetGroupReport> {
        self.config
            .target_groups
            .iter()
            .map(|g| {
                let (healthy, unhealthy, draining) = self.lifecycle.counts(&g.name);
                TargetGroupReport {
                    name: g.name.clone(),
                    protocol: g.protocol.to_string(),
                    port: g.port,
                    healthy,
                    unhealthy,
                    draining,
                    targets: g.targets.len(),
                    deletion_protection: g.deletion_protection,
                    deregistration_delay: g.deregistration_delay,
                    slow_start: g.slow_start,
                    cross_zone: g.cross_zone,
                    unhealthy_connection_termination: g.unhealthy_connection_termination,
                }
            })
            .collect()
    }

    pub(super) fn target_health(
        &self,
        group: &str,
    ) -> Result<Vec<TargetHealthReport>, ControlError> {
        let g = verbs::group(&self.config, group)?;
        Ok(self
            .lifecycle
            .reports(&self.config, g, &ConfiguredChecks, Instant::now()))
    }

    /// The XDP connection table, or without XDP the UDP relays' flow
    /// tables (TCP connections of the userspace proxy are in no table; the
    /// metrics count them).
    pub(super) async fn flows(&self, limit: usize) -> Result<FlowsReport, ControlError> {
        if let Some(xdp) = &self.xdp {
            return Ok(xdp.flows(limit));
        }
        let mut report = FlowsReport {
            entries: 0,
            active: 0,
            sample: Vec::new(),
        };
        for (vip, snapshot) in self.userspace.udp_flows(limit).await {
            report.entries += snapshot.entries as u64;
            report.active += snapshot.active as u64;
            let room = limit.saturating_sub(report.sample.len());
            report
                .sample
                .extend(snapshot.sample.into_iter().take(room).map(|f| FlowReport {
                    client: f.client,
                    vip,
                    protocol: "udp".into(),
                    target: Some(f.target),
                    state: "established".into(),
                    idle_s: f.idle.as_secs(),
                }));
        }
        Ok(report)
    }

    pub(super) fn stats(&self) -> Result<StatsReport, ControlError> {
        if self.xdp.is_none() {
            return Err(ControlError::NotFound(
                "no XDP data path: packet counters exist only with dataplane = \"xdp\"".into(),
            ));
        }
        let snap = stats::snapshot(&self.config.daemon.pin_dir)
            .map_err(|e| ControlError::Failed(ErrorChain(&e).to_string()))?;
        Ok(stats_report(&self.config, &snap))
    }
}

fn counters(name: String, c: &lb_common::Counters) -> CountersReport {
    CountersReport {
        name,
        packets_in: c.packets_in,
        bytes_in: c.bytes_in,
        packets_out: c.packets_out,
        bytes_out: c.bytes_out,
        new_flows: c.new_flows,
    }
}

fn stats_report(config: &Config, snap: &stats::Snapshot) -> StatsReport {
    let listeners = snap
        .vips
        .iter()
        .map(|(key, _, c)| counters(config.vip_name(key, VipOwners::Any), c))
        .collect();
    let targets = snap
        .targets
        .iter()
        .map(|(id, t, c)| {
            let name =
                net::target_endpoint(t).map_or_else(|| format!("id {id}"), |ep| ep.to_string());
            counters(name, c)
        })
        .collect();
    let datapath = snap
        .stats
        .iter()
        .map(|(s, n)| (s.name().to_string(), *n))
        .collect();
    StatsReport {
        listeners,
        targets,
        datapath,
    }
}
