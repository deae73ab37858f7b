//! Failed client handshakes, logged as a sample: scanners, health checkers
//! that never finish and floods of bad handshakes must not write a log line
//! each (the count is a metric of the caller's). The first failure is
//! logged; later ones at most once per [`EVERY`], with how many failed
//! since the line before and the last one's client and error.
use std::{net::SocketAddr, time::Duration};

use parking_lot::Mutex;
use tokio::time::Instant;
use tracing::info;

/// The shortest time between two lines.
pub const EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct HandshakeLog(Mutex<Sample>);

#[derive(Default)]
struct Sample {
    /// When the last line was written.
    logged_at: Option<Instant>,
    /// Failures not yet in a line.
    unlogged: u64,
}

impl HandshakeLog {
    /// One failed handshake of `listener`'s client `client`.
    pub fn failed(&self, listener: &str, client: SocketAddr, error: &str) {
        let Some(failed) = self.due() else {
            return;
        };
        // `failed`: how many since the last such line (the client and error
        // are the last one's).
        info!(
            listener = %listener,
            %client,
            error,
            failed,
            "tls handshake failed (sampled)"
        );
    }

    /// Counts one failure; the failures to report when a line is due.
    fn due(&self) -> Option<u64> {
        let mut s = self.0.lock();
        s.unlogged += 1;
        let now = Instant::now();
        if s.logged_at.is_some_and(|at| now - at < EVERY) {
            return None;
        }
        s.logged_at = Some(now);
        Some(std::mem::take(&mut s.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_period_with_the_count() {
        let log = HandshakeLog::default();
        assert_eq!(log.due(), Some(1));
        for _ in 0..999 {
            assert_eq!(log.due(), None);
        }
        tokio::time::advance(EVERY).await;
        assert_eq!(log.due(), Some(1000));
        tokio::time::advance(EVERY / 2).await;
        assert_eq!(log.due(), None);
        tokio::time::advance(EVERY).await;
        assert_eq!(log.due(), Some(2));
    }
}
