//! What a run measured: samples per case, the `lb stats` proof, the
//! conditions, and the ratios between cases.
use std::time::Duration;

use super::Case;
use super::cpu::CpuTime;

/// One measured window.
#[derive(Clone, Debug)]
pub struct Sample {
    pub sent_pps: f64,
    pub delivered_pps: f64,
    /// Delivered pps per target (index = target - 1).
    pub per_target: Vec<f64>,
    /// CPU time per CPU over the window.
    pub cpu: Vec<CpuTime>,
    /// Frames the veths dropped (full rings) while the generator ran,
    /// warm-up included: XDP transmit errors of the client's veth and of
    /// the LB's target-facing veths, plus their TX drops (kernel path).
    pub veth_drops: u64,
    /// ns per run of the XDP program on the LB's client veth, measured
    /// after the window (`prog_time`); `None` for the kernel path.
    pub prog_ns: Option<f64>,
}

/// All rounds of one case.
#[derive(Clone, Debug)]
pub struct CaseResult {
    pub case: Case,
    pub samples: Vec<Sample>,
    /// `lb stats` evidence (lb cases only).
    pub proof: LbProof,
}

impl CaseResult {
    pub fn delivered_median(&self) -> f64 {
        median(self.samples.iter().map(|s| s.delivered_pps).collect())
    }

    pub fn sent_median(&self) -> f64 {
        median(self.samples.iter().map(|s| s.sent_pps).collect())
    }

    /// CPU time of the whole chain per delivered packet (median pps);
    /// `None` when nothing was delivered (nftables with more flows than
    /// its conntrack table holds).
    pub fn ns_per_packet(&self) -> Option<f64> {
        let d = self.delivered_median();
        (d > 0.0).then(|| 1e9 / d)
    }

    /// Median ns per run of the forwarder's XDP program, if it has one.
    pub fn prog_ns(&self) -> Option<f64> {
        let v: Vec<f64> = self.samples.iter().filter_map(|s| s.prog_ns).collect();
        (!v.is_empty()).then(|| median(v))
    }

    /// Frames dropped by full veth rings, all rounds.
    pub fn veth_drops(&self) -> u64 {
        self.samples.iter().map(|s| s.veth_drops).sum()
    }

    /// CPU time per CPU summed over the rounds.
    pub fn cpu(&self) -> Vec<CpuTime> {
        let mut sum: Vec<CpuTime> = Vec::new();
        for s in &self.samples {
            sum.resize(s.cpu.len().max(sum.len()), CpuTime::default());
            for (t, c) in sum.iter_mut().zip(&s.cpu) {
                t.total += c.total;
                t.idle += c.idle;
                t.softirq += c.softirq;
            }
        }
        sum
    }

    /// Share of each target in the delivered packets, over all rounds.
    pub fn target_shares(&self) -> Vec<f64> {
        let n = self.samples.first().map_or(0, |s| s.per_target.len());
        let sums: Vec<f64> = (0..n)
            .map(|i| self.samples.iter().map(|s| s.per_target[i]).sum())
            .collect();
        let total: f64 = sums.iter().sum();
        sums.iter()
            .map(|s| if total > 0.0 { s / total } else { 0.0 })
            .collect()
    }
}

/// `lb stats` evidence for an `lb` case, summed over its rounds (from
/// before the generator started until after it stopped).
#[derive(Clone, Debug, Default)]
pub struct LbProof {
    pub sent: u64,
    pub forwarded: u64,
    pub delivered: u64,
    /// Every other data-path counter that moved, with its delta.
    pub other: Vec<(String, u64)>,
    /// `lb stats` after the case's last round.
    pub last_stats: String,
}

/// The run's conditions, printed and written with the numbers.
#[derive(Clone, Debug)]
pub struct Conditions {
    pub kernel: String,
    pub cpus: usize,
    pub loadavg_before: String,
    pub loadavg_after: String,
    pub elapsed: Duration,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub cases: Vec<CaseResult>,
    pub conditions: Conditions,
}

impl Report {
    pub fn case(&self, c: Case) -> &CaseResult {
        self.cases
            .iter()
            .find(|r| r.case == c)
            .expect("every case ran")
    }

    /// The ratios reported, as (case, baseline): how many times the
    /// baseline's median delivered pps the case achieves.
    pub const RATIOS: [(Case, Case); 11] = [
        (Case::LbNat, Case::Nftables),
        (Case::LbNat, Case::Spread),
        (Case::SpreadState, Case::Spread),
        (Case::LbNat, Case::SpreadState),
        (Case::LbNat, Case::Redirect),
        (Case::LbDsr, Case::SpreadIpip),
        (Case::LbDsr, Case::RedirectIpip),
        (Case::LbDsr, Case::LbNat),
        (Case::Spread, Case::Redirect),
        (Case::SpreadIpip, Case::RedirectIpip),
        (Case::RedirectIpip, Case::Redirect),
    ];

    /// `case`'s median delivered pps over `baseline`'s; `None` when the
    /// baseline delivered nothing.
    pub fn ratio(&self, case: Case, baseline: Case) -> Option<f64> {
        let b = self.case(baseline).delivered_median();
        (b > 0.0).then(|| self.case(case).delivered_median() / b)
    }

    /// The XDP program's own ns per packet of `case` above its floor's, if
    /// both have a program.
    pub fn prog_above_floor_ns(&self, case: Case) -> Option<f64> {
        let floor = case.floor()?;
        Some(self.case(case).prog_ns()? - self.case(floor).prog_ns()?)
    }

    /// ns per packet of `case` above its floor ([`Case::floor`]), if it
    /// has one.
    pub fn above_floor_ns(&self, case: Case) -> Option<f64> {
        let floor = case.floor()?;
        Some(self.case(case).ns_per_packet()? - self.case(floor).ns_per_packet()?)
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
