//! What the soak does to the load balancer while the clients run, on a
//! schedule spread over the run: reloads (by SIGHUP and by the API, each
//! changing a weight), target cycles (deregister through the API, wait
//! until no client is left on it and its drain is over, kill its servers
//! and start them again, register it again, wait until it is healthy) and
//! daemon restarts (SIGTERM, then a new `lb run` on the same pins), with
//! the daemon's memory and descriptors sampled while its own listeners
//! are quiet.
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use lb_tests::topology::target_name;

use crate::lab::{self, SoakLab, TARGETS, Usage};
use crate::traffic::Shared;

#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub run: Duration,
    pub warmup: Duration,
    pub reloads: usize,
    pub restarts: usize,
    /// Quiet time between target cycles.
    pub cycle_gap: Duration,
    /// How long a drain may take before it is a failure.
    pub drain_within: Duration,
    /// Userspace clients that must park for a restart or a sample.
    pub parkers: usize,
    /// The web group's keep_alive_timeout: a sample waits this long (and
    /// a maintenance period) with the clients parked, so that the pool's
    /// connections have aged out.
    pub keep_alive: Duration,
}

/// One sample of the daemon's usage.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Which `lb run` (0: the first).
    pub incarnation: usize,
    pub at: Duration,
    pub label: &'static str,
    pub usage: Usage,
}

#[derive(Debug, Default)]
pub struct Done {
    pub reloads_signal: usize,
    pub reloads_api: usize,
    pub restarts: usize,
    pub target_cycles: usize,
    pub registrations: usize,
    pub deregistrations: usize,
    pub samples: Vec<Sample>,
    /// What went wrong on the conductor's side (a refused reload, a drain
    /// that did not end, ...).
    pub errors: Vec<String>,
}

/// Where a target cycle is.
enum Cycle {
    Idle { until: Instant, next: usize },
    Draining { target: usize, since: Instant },
    Healing { target: usize },
}

pub fn conduct(lab: &mut SoakLab, shared: &Arc<Shared>, plan: Plan) -> Done {
    let mut done = Done::default();
    let start = Instant::now();
    let mut incarnation = 0;
    thread::sleep(plan.warmup);
    sample(
        lab,
        shared,
        &plan,
        &mut done,
        start,
        incarnation,
        "after warm-up",
    );
    let end = start + plan.run;
    let span = plan.run.saturating_sub(plan.warmup);
    let at = |k: usize, n: usize| start + plan.warmup + span.mul_f64((k as f64 + 0.5) / n as f64);
    let reload_at: Vec<Instant> = (0..plan.reloads).map(|k| at(k, plan.reloads)).collect();
    let restart_at: Vec<Instant> = (0..plan.restarts).map(|k| at(k, plan.restarts)).collect();
    let (mut reloads, mut restarts) = (0, 0);
    let mut cycle = Cycle::Idle {
        until: Instant::now() + plan.cycle_gap,
        next: 1,
    };
    while Instant::now() < end || reloads < plan.reloads || restarts < plan.restarts {
        let now = Instant::now();
        if reloads < plan.reloads && now >= reload_at[reloads] {
            reload(lab, reloads, &mut done);
            reloads += 1;
            continue;
        }
        let idle = matches!(cycle, Cycle::Idle { .. });
        if restarts < plan.restarts && now >= restart_at[restarts] && idle {
            sample(
                lab,
                shared,
                &plan,
                &mut done,
                start,
                incarnation,
                "before SIGTERM",
            );
            restart(lab, shared, &plan, &mut done);
            incarnation += 1;
            restarts += 1;
            thread::sleep(plan.warmup.min(Duration::from_secs(10)));
            sample(
                lab,
                shared,
                &plan,
                &mut done,
                start,
                incarnation,
                "after warm-up",
            );
            continue;
        }
        cycle = step_cycle(lab, shared, &plan, cycle, now < end, &mut done);
        thread::sleep(Duration::from_millis(50));
    }
    // Let the last cycle finish so every target is back.
    while !matches!(cycle, Cycle::Idle { .. }) {
        cycle = step_cycle(lab, shared, &plan, cycle, false, &mut done);
        thread::sleep(Duration::from_millis(50));
    }
    sample(
        lab,
        shared,
        &plan,
        &mut done,
        start,
        incarnation,
        "at the end",
    );
    done
}

/// Reload `k`: a weight changes (1 -> 2 -> 1 ... in turn over the
/// targets); even ones by SIGHUP, odd ones through the API.
fn reload(lab: &mut SoakLab, k: usize, done: &mut Done) {
    let target = k % TARGETS + 1;
    let weight = 1 + (k / TARGETS % 2) as u32;
    lab.set_weight(target, weight);
    if k.is_multiple_of(2) {
        lab.reload_by_signal();
        done.reloads_signal += 1;
    } else {
        match lab.reload_by_api() {
            Ok(()) => done.reloads_api += 1,
            Err(e) => done.errors.push(format!("reload {k}: {e}")),
        }
    }
}

fn step_cycle(
    lab: &mut SoakLab,
    shared: &Arc<Shared>,
    plan: &Plan,
    cycle: Cycle,
    may_start: bool,
    done: &mut Done,
) -> Cycle {
    match cycle {
        Cycle::Idle { until, next } if may_start && Instant::now() >= until => {
            // Deregistered first, so that no new flow or request picks it,
            // then the clients are told to leave it.
            if let Err(e) = lab.deregister(next) {
                done.errors.push(e);
            }
            done.deregistrations += 1;
            shared.set_draining(&target_name(next), true);
            Cycle::Draining {
                target: next,
                since: Instant::now(),
            }
        }
        Cycle::Draining { target, since } => {
            let name = target_name(target);
            if shared.open_on(&name) > 0 {
                if since.elapsed() > plan.drain_within {
                    done.errors.push(format!(
                        "{} client connections still on {name} {:?} after its deregistration",
                        shared.open_on(&name),
                        plan.drain_within
                    ));
                } else {
                    return Cycle::Draining { target, since };
                }
            }
            if let Err(e) = lab.wait_drained(target, plan.drain_within) {
                done.errors.push(e);
            }
            lab.kill_and_restart_target(target);
            shared.set_draining(&name, false);
            if let Err(e) = lab.register(target) {
                done.errors.push(e);
            }
            done.registrations += 1;
            Cycle::Healing { target }
        }
        Cycle::Healing { target } => {
            if let Err(e) = lab.wait_healthy(Duration::from_secs(30)) {
                done.errors
                    .push(format!("after {} came back: {e}", target_name(target)));
            }
            done.target_cycles += 1;
            Cycle::Idle {
                until: Instant::now() + plan.cycle_gap,
                next: target % TARGETS + 1,
            }
        }
        idle => idle,
    }
}

/// Parks the userspace clients (their connections closed), runs `f`,
/// and lets them go on.
fn with_quiet<T>(shared: &Shared, plan: &Plan, done: &mut Done, f: impl FnOnce() -> T) -> T {
    shared.pause();
    let deadline = Instant::now() + Duration::from_secs(30);
    while shared.parked() < plan.parkers && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    if shared.parked() < plan.parkers {
        done.errors.push(format!(
            "only {} of {} userspace clients parked within 30 s",
            shared.parked(),
            plan.parkers
        ));
    }
    let out = f();
    shared.resume();
    out
}

fn restart(lab: &mut SoakLab, shared: &Shared, plan: &Plan, done: &mut Done) {
    with_quiet(shared, plan, done, || {
        lab.stop_daemon();
        lab.start_daemon();
    });
    done.restarts += 1;
}

fn sample(
    lab: &SoakLab,
    shared: &Shared,
    plan: &Plan,
    done: &mut Done,
    start: Instant,
    incarnation: usize,
    label: &'static str,
) {
    let pid = lab.pid();
    // The pool's idle connections age out, then the reading without a
    // target connection (a health check may be in progress) is kept.
    let usage = with_quiet(shared, plan, done, || {
        thread::sleep(plan.keep_alive + Duration::from_millis(1500));
        let mut reading = lab::usage(pid);
        for _ in 0..20 {
            if !matches!(&reading, Ok(u) if u.target_conns > 0) {
                break;
            }
            thread::sleep(Duration::from_millis(100));
            reading = lab::usage(pid);
        }
        reading
    });
    match usage {
        Ok(usage) => {
            eprintln!(
                "soak: lb run #{incarnation} {label}: RSS {} KiB, {} fds \
                 ({} to targets)",
                usage.rss_kib, usage.fds, usage.target_conns
            );
            done.samples.push(Sample {
                incarnation,
                at: start.elapsed(),
                label,
                usage,
            });
        }
        Err(e) => done.errors.push(format!("sampling lb run: {e}")),
    }
}
