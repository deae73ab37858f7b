//! Which probe mark names which target address. A target keeps its mark
//! while any job probes it through the encapsulation, across reloads, so a
//! probe in flight during a reload is never wrapped for another target.
use std::{collections::BTreeMap, net::IpAddr};

use lb_common::probe::{MAX_PROBE_TARGETS, mark};

/// Target address -> slot (the mark is `mark(slot)`).
#[derive(Debug, Default)]
pub struct Marks {
    slots: BTreeMap<IpAddr, u16>,
}

/// What [`Marks::update`] changed, for the map.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MarkChanges {
    pub added: Vec<(u32, IpAddr)>,
    pub removed: Vec<u32>,
}

impl Marks {
    /// Makes `targets` the marked set: keeps the marks of those already
    /// marked, frees the rest, gives new ones the lowest free slots. Targets
    /// beyond [`MAX_PROBE_TARGETS`] get none (their probes fail).
    pub fn update(&mut self, targets: impl IntoIterator<Item = IpAddr>) -> MarkChanges {
        let wanted: std::collections::BTreeSet<IpAddr> = targets.into_iter().collect();
        let mut changes = MarkChanges::default();
        self.slots.retain(|ip, slot| {
            let keep = wanted.contains(ip);
            if !keep {
                changes.removed.push(mark(*slot));
            }
            keep
        });
        let used: std::collections::BTreeSet<u16> = self.slots.values().copied().collect();
        let mut free = (1..=MAX_PROBE_TARGETS as u16).filter(|s| !used.contains(s));
        for ip in wanted {
            if self.slots.contains_key(&ip) {
                continue;
            }
            let Some(slot) = free.next() else {
                break;
            };
            self.slots.insert(ip, slot);
            changes.added.push((mark(slot), ip));
        }
        changes
    }

    /// The mark of `target`, if it has one.
    pub fn of(&self, target: IpAddr) -> Option<u32> {
        self.slots.get(&target).map(|s| mark(*s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn marks_are_kept_freed_and_reused() {
        let mut m = Marks::default();
        let c = m.update([ip("10.0.0.1"), ip("fd00::1")]);
        assert_eq!(
            c.added,
            [(mark(1), ip("10.0.0.1")), (mark(2), ip("fd00::1"))]
        );
        assert!(c.removed.is_empty());
        // 10.0.0.1 goes, 10.0.0.2 comes: fd00::1 keeps its mark, the new
        // one takes the freed slot.
        let c = m.update([ip("fd00::1"), ip("10.0.0.2")]);
        assert_eq!(c.removed, [mark(1)]);
        assert_eq!(c.added, [(mark(1), ip("10.0.0.2"))]);
        assert_eq!(m.of(ip("fd00::1")), Some(mark(2)));
        assert_eq!(m.of(ip("10.0.0.1")), None);
        // The same set again changes nothing.
        assert_eq!(
            m.update([ip("fd00::1"), ip("10.0.0.2")]),
            MarkChanges::default()
        );
    }
}
