//! The coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`): the clock the
//! data path stamps flows with (`bpf_ktime_get_coarse_ns`), and cheap
//! enough for the HTTP listeners to read on every read and write (their
//! timeouts need no finer resolution than the kernel tick).

/// Nanoseconds of the coarse monotonic clock (0 if it cannot be read,
/// which no Linux since 2.6.32 does).
pub fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass, which lives
    // across the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Milliseconds of the coarse monotonic clock.
pub fn monotonic_coarse_ms() -> u64 {
    monotonic_coarse_ns() / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_forward_with_the_monotonic_clock() {
        let a = monotonic_coarse_ns();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let b = monotonic_coarse_ns();
        assert!(a > 0, "the clock reads");
        // The coarse clock ticks every 1-10 ms: 30 ms cannot pass unseen.
        assert!(b > a, "{b} after {a}");
        assert!(monotonic_coarse_ms() >= b / 1_000_000);
    }
}
