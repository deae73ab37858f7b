//! Tells the operator when the reply-interface check refuses replies
//! (`daemon.reply_interface_check = "strict"`, docs/config.md).
//!
//! The data path counts each nat reply it passed untranslated because it
//! came in by an interface other than the route to its target
//! (`pass_reply_interface`). Forged replies do that, and so do the
//! deployments the check cannot serve (multipath or asymmetric routes to
//! targets, the program on a bond's members or a VLAN's lower device):
//! there every connection through the VIP fails, and the counter alone
//! says so only to whoever reads it. So the control loop's periodic look
//! reads the counter and logs a warning when it moved, at most once per
//! [`WARN_EVERY`] (a flood of forgeries must not flood the log too), with
//! how many replies were refused since the last warning.
use std::time::{Duration, Instant};

/// Least time between two warnings.
pub const WARN_EVERY: Duration = Duration::from_secs(60);

/// What the counter said so far.
#[derive(Debug)]
pub struct ReplyAlarm {
    /// The counter at the last look (at first, before the program was
    /// attached); `None` until one could be read (the counter may hold an
    /// earlier daemon's counts, which are not this one's).
    seen: Option<u64>,
    /// Refused since the last warning, not yet told.
    untold: u64,
    last_warned: Option<Instant>,
}

impl ReplyAlarm {
    /// An alarm that counts from `baseline`, the counter's value before the
    /// program was attached (`None`: unreadable; the first look's value is
    /// then the baseline).
    pub fn starting_at(baseline: Option<u64>) -> Self {
        Self {
            seen: baseline,
            untold: 0,
            last_warned: None,
        }
    }

    /// Takes the counter's value at `now`; returns how many refused replies
    /// to warn about now, if a warning is due.
    pub fn observe(&mut self, total: u64, now: Instant) -> Option<u64> {
        let before = self.seen.replace(total)?;
        // Cannot happen while one daemon reads its own map (only a load
        // makes the map anew, and the baseline is taken after it); if it
        // ever goes back, count from the new value rather than underflow.
        self.untold += total.checked_sub(before).unwrap_or(total);
        let due = self
            .last_warned
            .is_none_or(|t| now.duration_since(t) >= WARN_EVERY);
        if self.untold == 0 || !due {
            return None;
        }
        self.last_warned = Some(now);
        Some(std::mem::take(&mut self.untold))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_the_baseline() {
        let mut a = ReplyAlarm::starting_at(Some(500));
        let t = Instant::now();
        assert_eq!(a.observe(500, t), None, "an earlier daemon's counts");
        assert_eq!(a.observe(503, t + Duration::from_secs(2)), Some(3));
    }

    #[test]
    fn without_a_baseline_the_first_look_is_one() {
        let mut a = ReplyAlarm::starting_at(None);
        let t = Instant::now();
        assert_eq!(a.observe(500, t), None);
        assert_eq!(a.observe(503, t + Duration::from_secs(2)), Some(3));
    }

    #[test]
    fn warnings_are_spaced_and_nothing_is_lost_between_them() {
        let mut a = ReplyAlarm::starting_at(Some(0));
        let t = Instant::now();
        assert_eq!(a.observe(1, t + Duration::from_secs(2)), Some(1));
        assert_eq!(a.observe(10, t + Duration::from_secs(4)), None);
        assert_eq!(a.observe(25, t + Duration::from_secs(40)), None);
        assert_eq!(
            a.observe(30, t + Duration::from_secs(2) + WARN_EVERY),
            Some(29),
            "everything since the last warning"
        );
        assert_eq!(a.observe(30, t + Duration::from_secs(200)), None);
    }

    #[test]
    fn a_counter_made_anew_counts_from_zero() {
        let mut a = ReplyAlarm::starting_at(Some(100));
        let t = Instant::now();
        assert_eq!(a.observe(4, t + Duration::from_secs(2)), Some(4));
    }
}
