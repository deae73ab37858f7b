//! The response timeout of a client connection's requests, with one timer
//! per connection instead of one per request.
//!
//! It counts from the last move of the request's body (its end, once it
//! went out whole), or from the request's start while none of it moved: a
//! large upload over a slow link is not a slow target, and one that stops
//! moving gets its 504 the limit later. The timer is set for the start; when
//! it fires and the body moved less than the limit ago, it is set again.
//!
//! A new `tokio::time::timeout` per request registers a timer in the
//! runtime's wheel and removes it again, about 3% of the proxy's user-space
//! work per request (measured). A timer moved to a later deadline while it
//! is still registered costs one atomic store (tokio only notes the new
//! deadline and re-files the timer when its old slot comes up), and HTTP/1
//! requests on one connection come one after another, so each reuses the
//! one before it. Concurrent requests (HTTP/2 streams) that find it taken
//! make their own.
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use parking_lot::Mutex;
use tokio::time::{Instant, Sleep, sleep_until};

use super::idle::InFlight;

#[derive(Default)]
pub struct Deadlines {
    /// The idle timer, while no request holds it.
    spare: Mutex<Option<Pin<Box<Sleep>>>>,
}

impl Deadlines {
    /// `fut`'s output, or `None` when `limit` passed first since the start,
    /// or since `request`'s body last moved.
    #[inline]
    pub fn within<'a, F: Future>(
        &'a self,
        limit: Duration,
        request: &'a InFlight,
        fut: F,
    ) -> Within<'a, F> {
        let deadline = Instant::now() + limit;
        let timer = match self.take() {
            Some(mut t) => {
                t.as_mut().reset(deadline);
                t
            }
            None => Box::pin(sleep_until(deadline)),
        };
        Within {
            fut,
            timer: Some(timer),
            limit,
            request,
            owner: self,
        }
    }

    fn take(&self) -> Option<Pin<Box<Sleep>>> {
        self.spare.lock().take()
    }

    fn put(&self, timer: Pin<Box<Sleep>>) {
        *self.spare.lock() = Some(timer);
    }
}

pin_project_lite::pin_project! {
    /// [`Deadlines::within`]: written out rather than `async`, so the
    /// request's future is polled where it lies instead of being moved
    /// into one more state machine.
    pub struct Within<'a, F> {
        #[pin]
        fut: F,
        // `None` once finished (handed back).
        timer: Option<Pin<Box<Sleep>>>,
        limit: Duration,
        request: &'a InFlight,
        owner: &'a Deadlines,
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(timer) = this.timer else {
            panic!("`Within` polled after it finished");
        };
        let out = match this.fut.poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => loop {
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let Some(later) = this.request.body_at().map(|at| at + *this.limit) else {
                    break None;
                };
                if later <= Instant::now() {
                    break None;
                }
                timer.as_mut().reset(later);
            },
        };
        if let Some(t) = this.timer.take() {
            this.owner.put(t);
        }
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{idle::Activity, upstream::BodyProgress};

    /// A request on a new connection.
    fn request() -> InFlight {
        Activity::new(false).request(false)
    }

    #[tokio::test(start_paused = true)]
    async fn each_request_gets_the_whole_limit_from_its_own_start() {
        let d = Deadlines::default();
        let r = request();
        let limit = Duration::from_secs(10);
        assert_eq!(d.within(limit, &r, async { 1 }).await, Some(1));
        // The reused timer was set for 10 s from the first request; the
        // second starts 8 s later and must still get its full 10 s.
        tokio::time::sleep(Duration::from_secs(8)).await;
        let slow = d.within(limit, &r, tokio::time::sleep(Duration::from_secs(9)));
        assert_eq!(slow.await, Some(()));
        let too_slow = d.within(limit, &r, tokio::time::sleep(Duration::from_secs(11)));
        let started = Instant::now();
        assert_eq!(too_slow.await, None);
        assert_eq!(started.elapsed(), limit);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_requests_each_have_a_timer() {
        let d = Deadlines::default();
        let r = request();
        let limit = Duration::from_secs(5);
        let (a, b) = tokio::join!(
            d.within(limit, &r, tokio::time::sleep(Duration::from_secs(3))),
            d.within(limit, &r, tokio::time::sleep(Duration::from_secs(7))),
        );
        assert_eq!(a, Some(()));
        assert_eq!(b, None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_counts_from_the_last_move_of_the_request_body() {
        let d = Deadlines::default();
        let r = request();
        let limit = Duration::from_secs(5);
        let started = Instant::now();
        // A body moving every 3 s for 12 s, then an answer 4 s later: in
        // time.
        let upload_then_answer = async {
            for _ in 0..4 {
                r.body_moved();
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            r.body_sent();
            tokio::time::sleep(Duration::from_secs(4)).await;
        };
        assert_eq!(d.within(limit, &r, upload_then_answer).await, Some(()));
        assert_eq!(started.elapsed(), Duration::from_secs(16));
        // A body that stops moving after 2 s: 504 the limit later.
        let r = request();
        let started = Instant::now();
        let stalled_upload = async {
            r.body_moved();
            tokio::time::sleep(Duration::from_secs(2)).await;
            r.body_moved();
            std::future::pending::<()>().await;
        };
        assert_eq!(d.within(limit, &r, stalled_upload).await, None);
        assert_eq!(started.elapsed(), Duration::from_secs(7));
    }
}
