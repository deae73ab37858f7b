//! A watched value as one reader last saw it.
//!
//! `watch::Receiver::borrow` takes the channel's read lock: on the request
//! path, with every connection of every worker thread reading the same
//! channel, that lock's cache line moves between cores on each request.
//! [`Latest::get`] only loads the channel's version (no write to shared
//! memory) and re-reads the value after the sender changed it.
use parking_lot::Mutex;

use tokio::sync::watch;

pub struct Latest<T> {
    /// Only its owner (one connection) locks it: never contended.
    inner: Mutex<(watch::Receiver<T>, T)>,
}

impl<T: Clone> Latest<T> {
    pub fn new(mut rx: watch::Receiver<T>) -> Self {
        let value = rx.borrow_and_update().clone();
        Self {
            inner: Mutex::new((rx, value)),
        }
    }

    /// The current value. Once the sender is gone, the last one it sent.
    pub fn get(&self) -> T {
        let mut guard = self.inner.lock();
        let (rx, value) = &mut *guard;
        // Closed (the daemon is stopping): the last value may be unseen.
        if rx.has_changed().unwrap_or(true) {
            *value = rx.borrow_and_update().clone();
        }
        value.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_sender() {
        let (tx, rx) = watch::channel(1);
        let latest = Latest::new(rx);
        assert_eq!(latest.get(), 1);
        tx.send(2).unwrap();
        assert_eq!(latest.get(), 2);
        assert_eq!(latest.get(), 2);
        tx.send(3).unwrap();
        drop(tx);
        assert_eq!(latest.get(), 3);
    }
}
