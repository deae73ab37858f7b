//! The response timeout of a client connection's requests, with one timer
//! per connection instead of one per request.
//!
//! It counts from the end of the request's body, or from the request's start
//! when it has none: a large upload over a slow link is not a slow target.
//! (A body that stops moving is the client idle timeout's, [`super::idle`].)
//! The timer is set for the start; when it fires while the body is still
//! going out, or ended less than the limit ago, it is set again.
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
    sync::Mutex,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::{Instant, Sleep, sleep_until};

use super::idle::{InFlight, Upload};

#[derive(Default)]
pub struct Deadlines {
    /// The idle timer, while no request holds it.
    spare: Mutex<Option<Pin<Box<Sleep>>>>,
}

impl Deadlines {
    /// `fut`'s output, or `None` when `limit` passed first since the start
    /// or since the end of `request`'s body.
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
        self.spare.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn put(&self, timer: Pin<Box<Sleep>>) {
        *self.spare.lock().unwrap_or_else(|e| e.into_inner()) = Some(timer);
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
                let later = match this.request.upload() {
                    Upload::None => break None,
                    Upload::Ongoing => Instant::now() + *this.limit,
                    Upload::Ended(at) => at + *this.limit,
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
    async fn the_limit_counts_from_the_end_of_the_request_body() {
        let d = Deadlines::default();
        let r = request();
        let limit = Duration::from_secs(5);
        let started = Instant::now();
        // A body going out for 12 s, then an answer 4 s later: in time.
        let upload_then_answer = async {
            r.body_started();
            tokio::time::sleep(Duration::from_secs(12)).await;
            r.body_sent();
            tokio::time::sleep(Duration::from_secs(4)).await;
        };
        assert_eq!(d.within(limit, &r, upload_then_answer).await, Some(()));
        assert_eq!(started.elapsed(), Duration::from_secs(16));
        // No answer: 504 the limit after the body's end.
        let r = request();
        let started = Instant::now();
        let upload_then_nothing = async {
            r.body_started();
            tokio::time::sleep(Duration::from_secs(7)).await;
            r.body_sent();
            std::future::pending::<()>().await;
        };
        assert_eq!(d.within(limit, &r, upload_then_nothing).await, None);
        assert_eq!(started.elapsed(), Duration::from_secs(12));
    }
}
