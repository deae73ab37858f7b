//! The stop signal of a listener (`true`, or its sender gone, when the
//! listener is removed or the daemon stops), and how a connection waits for
//! it without slowing down.
//!
//! A connection task is woken many times per request. In a `select!` with
//! the signal, every one of those wakes would poll the signal's future,
//! and tokio's `Notified` takes the signal's lock on each poll: one lock
//! shared by all connections of the listener, on every worker thread.
//! [`until_stopped`] polls the signal only when the signal itself woke the
//! task.
use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
};

use futures_util::task::AtomicWaker;
use tokio::sync::watch;

/// Completes when the stop signal is raised or its sender is gone.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is dropped: stop as well.
    let _gone = stop.wait_for(|s| *s).await;
}

/// Runs `fut` until it completes (`Some`) or `stop` is raised (`None`,
/// and `fut` is dropped).
pub fn until_stopped<F: Future>(fut: F, mut stop: watch::Receiver<bool>) -> UntilStopped<F> {
    UntilStopped {
        fut: Box::pin(fut),
        stop: Box::pin(async move { stopped(&mut stop).await }),
        signal: Arc::new(Signal {
            // Set so that the first poll registers with the signal.
            fired: AtomicBool::new(true),
            task: AtomicWaker::new(),
        }),
    }
}

pub struct UntilStopped<F> {
    fut: Pin<Box<F>>,
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    signal: Arc<Signal>,
}

/// The waker the stop future is polled with: it notes that the signal
/// fired, then wakes the connection's task.
struct Signal {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> Future for UntilStopped<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.signal.task.register(cx.waker());
        // A load first: the swap would write the line on every poll.
        if self.signal.fired.load(Ordering::Acquire)
            && self.signal.fired.swap(false, Ordering::AcqRel)
        {
            let waker = Waker::from(Arc::clone(&self.signal));
            if self
                .stop
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_ready()
            {
                return Poll::Ready(None);
            }
        }
        self.fut.as_mut().poll(cx).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn runs_to_completion_without_a_stop() {
        let (_tx, rx) = watch::channel(false);
        assert_eq!(until_stopped(async { 7 }, rx).await, Some(7));
    }

    #[tokio::test]
    async fn a_stop_ends_a_pending_future() {
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(until_stopped(std::future::pending::<()>(), rx));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!task.is_finished());
        tx.send(true).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert_eq!(ended.unwrap().unwrap(), None);
    }

    #[tokio::test]
    async fn a_dropped_sender_stops_too() {
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(until_stopped(std::future::pending::<()>(), rx));
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(tx);
        let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert_eq!(ended.unwrap().unwrap(), None);
    }

    #[tokio::test]
    async fn an_already_raised_stop_wins() {
        let (tx, rx) = watch::channel(false);
        tx.send(true).unwrap();
        assert_eq!(until_stopped(async { 7 }, rx).await, None);
    }

    #[tokio::test]
    async fn wakes_of_the_future_still_reach_it() {
        let (_tx, rx) = watch::channel(false);
        let (otx, orx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(until_stopped(orx, rx));
        tokio::time::sleep(Duration::from_millis(20)).await;
        otx.send(5).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert_eq!(ended.unwrap().unwrap(), Some(Ok(5)));
    }
}
