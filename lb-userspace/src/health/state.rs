//! The per-target state machine: consecutive successes and failures against
//! the thresholds, as ELB counts them.
use super::Verdict;

/// Where a target stands with the checker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// No verdict yet (ELB: `initial`, `Elb.InitialHealthChecking`).
    Initial,
    Healthy,
    Unhealthy,
}

impl Status {
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Initial => "initial",
            Status::Healthy => "healthy",
            Status::Unhealthy => "unhealthy",
        }
    }
}

impl From<Verdict> for Status {
    fn from(h: Verdict) -> Self {
        match h {
            Verdict::Healthy => Status::Healthy,
            Verdict::Unhealthy => Status::Unhealthy,
        }
    }
}

/// Counts consecutive outcomes and says when a threshold is crossed.
///
/// From `Initial` the first success is enough to become healthy (a new target
/// should take traffic as soon as it answers), `unhealthy_threshold` failures
/// make it unhealthy. Afterwards `healthy_threshold` consecutive successes or
/// `unhealthy_threshold` consecutive failures cross.
#[derive(Debug, Clone)]
pub struct Tracker {
    status: Status,
    successes: u32,
    failures: u32,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
}

impl Tracker {
    pub fn new(status: Status, healthy_threshold: u32, unhealthy_threshold: u32) -> Self {
        Tracker {
            status,
            successes: 0,
            failures: 0,
            healthy_threshold,
            unhealthy_threshold,
        }
    }

    pub fn status(&self) -> Status {
        self.status
    }

    /// Records one probe; returns the new health when it crossed.
    pub fn record(&mut self, success: bool) -> Option<Verdict> {
        if success {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
        }
        let next = match self.status {
            Status::Initial | Status::Unhealthy if success => {
                let needed = if self.status == Status::Initial {
                    1
                } else {
                    self.healthy_threshold
                };
                (self.successes >= needed).then_some(Verdict::Healthy)
            }
            Status::Initial | Status::Healthy if !success => {
                (self.failures >= self.unhealthy_threshold).then_some(Verdict::Unhealthy)
            }
            _ => None,
        };
        if let Some(h) = next {
            self.status = h.into();
            self.successes = 0;
            self.failures = 0;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &mut Tracker, outcomes: &[bool]) -> Vec<Option<Verdict>> {
        outcomes.iter().map(|&ok| t.record(ok)).collect()
    }

    #[test]
    fn initial_turns_healthy_on_the_first_success() {
        let mut t = Tracker::new(Status::Initial, 5, 2);
        assert_eq!(run(&mut t, &[true]), [Some(Verdict::Healthy)]);
        assert_eq!(t.status(), Status::Healthy);
    }

    #[test]
    fn initial_turns_unhealthy_after_the_unhealthy_threshold() {
        let mut t = Tracker::new(Status::Initial, 5, 3);
        assert_eq!(
            run(&mut t, &[false, false, false]),
            [None, None, Some(Verdict::Unhealthy)]
        );
    }

    #[test]
    fn thresholds_count_consecutive_outcomes_only() {
        let mut t = Tracker::new(Status::Healthy, 3, 2);
        // An isolated failure does not cross; the success resets the count.
        assert_eq!(
            run(&mut t, &[false, true, false, false]),
            [None, None, None, Some(Verdict::Unhealthy)]
        );
        assert_eq!(
            run(&mut t, &[true, true, false, true, true, true]),
            [None, None, None, None, None, Some(Verdict::Healthy)]
        );
        // Staying where it is reports nothing.
        assert_eq!(run(&mut t, &[true, true, true]), [None, None, None]);
    }
}
