//! The recent health transitions the status page lists: a bounded ring,
//! newest last, kept by the control loop as verdicts arrive. Old entries
//! fall out; nothing here grows with uptime or with the number of targets.
use std::{
    collections::VecDeque,
    net::SocketAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use super::command::TransitionReport;

/// How many transitions are kept: a screenful, enough to see a flapping
/// target and what happened just before.
pub const MAX_TRANSITIONS: usize = 64;

/// The ring.
#[derive(Debug, Default)]
pub struct Transitions {
    recent: VecDeque<TransitionReport>,
}

impl Transitions {
    /// Records that `target` of `group` went from `from` to `to` (ELB
    /// state names) now, for `reason`; the oldest entry goes when full.
    pub fn record(
        &mut self,
        group: &str,
        target: SocketAddr,
        from: &str,
        to: &str,
        reason: Option<&str>,
    ) {
        self.record_at(group, target, from, to, reason, SystemTime::now());
    }

    fn record_at(
        &mut self,
        group: &str,
        target: SocketAddr,
        from: &str,
        to: &str,
        reason: Option<&str>,
        at: SystemTime,
    ) {
        if self.recent.len() == MAX_TRANSITIONS {
            self.recent.pop_front();
        }
        // A clock before 1970 is a broken clock; 0 says so plainly.
        let unix_ms = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.recent.push_back(TransitionReport {
            unix_ms,
            target_group: group.to_owned(),
            target,
            from: from.to_owned(),
            to: to.to_owned(),
            reason: reason.map(str::to_owned),
        });
    }

    /// The kept transitions, newest first.
    pub fn newest_first(&self) -> Vec<TransitionReport> {
        self.recent.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn keeps_the_newest_within_its_bound() {
        let mut t = Transitions::default();
        let target: SocketAddr = "10.0.0.1:80".parse().unwrap();
        for i in 0..MAX_TRANSITIONS as u64 + 5 {
            let at = UNIX_EPOCH + Duration::from_millis(i);
            t.record_at(
                "web",
                target,
                "healthy",
                "unhealthy",
                Some("Target.Timeout"),
                at,
            );
        }
        let list = t.newest_first();
        assert_eq!(list.len(), MAX_TRANSITIONS);
        assert_eq!(list[0].unix_ms, MAX_TRANSITIONS as u64 + 4);
        assert_eq!(list[MAX_TRANSITIONS - 1].unix_ms, 5);
        assert_eq!(list[0].reason.as_deref(), Some("Target.Timeout"));
        assert_eq!(
            (list[0].from.as_str(), list[0].to.as_str()),
            ("healthy", "unhealthy")
        );
    }
}
