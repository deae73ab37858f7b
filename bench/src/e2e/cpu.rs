//! CPU time per CPU from /proc/stat, to report where the time went.
/// Jiffies of one CPU (from /proc/stat): all, idle (with iowait), softirq.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTime {
    pub total: u64,
    pub idle: u64,
    pub softirq: u64,
}

impl CpuTime {
    pub fn busy_share(&self) -> f64 {
        share(self.total - self.idle, self.total)
    }

    pub fn softirq_share(&self) -> f64 {
        share(self.softirq, self.total)
    }
}

fn share(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        part as f64 / total as f64
    }
}

/// Per-CPU times now, `cpu0`, `cpu1`, ... in order.
pub fn cpu_times() -> Vec<CpuTime> {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| {
            // user nice system idle iowait irq softirq steal ...
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let at = |i: usize| v.get(i).copied().unwrap_or(0);
            CpuTime {
                total: v.iter().take(8).sum(),
                idle: at(3) + at(4),
                softirq: at(6),
            }
        })
        .collect()
}

pub fn cpu_delta(after: &[CpuTime], before: &[CpuTime]) -> Vec<CpuTime> {
    after
        .iter()
        .zip(before)
        .map(|(a, b)| CpuTime {
            total: a.total - b.total,
            idle: a.idle - b.idle,
            softirq: a.softirq - b.softirq,
        })
        .collect()
}
