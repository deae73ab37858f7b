//! The threads that serve userspace connections: one single-threaded tokio
//! runtime per thread, as HAProxy's and Envoy's workers are one event loop
//! each.
//!
//! An accepted connection is handed to one worker and stays there for its
//! life: its TLS session, its HTTP exchanges, the back-end connections it
//! opens (and the tasks hyper spawns for them) all run on that thread. A
//! request then wakes no other thread, and back-end connections are kept
//! per worker ([`crate::http::pool`]) so reusing one normally stays on the
//! thread too. The control loop, API and health checks stay on the daemon's
//! main runtime.
//!
//! Connections go to the worker serving the fewest, ties in turn.
use std::{
    cell::Cell,
    future::Future,
    io,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
};

use tokio::{
    net::TcpStream,
    runtime::{Builder, Handle},
    sync::oneshot,
};
use tracing::debug;

thread_local! {
    /// The index of the worker this thread is, if it is one.
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker running the caller, `None` off the workers.
pub fn current() -> Option<usize> {
    CURRENT.with(Cell::get)
}

struct Worker {
    handle: Handle,
    /// Connections it serves now.
    load: Arc<AtomicUsize>,
    /// Dropped to end the thread (its runtime and every task on it).
    _stop: oneshot::Sender<()>,
}

/// The worker threads. Dropping the last handle ends them.
pub struct Workers {
    workers: Vec<Worker>,
    /// Tie-break among equally loaded workers.
    next: AtomicUsize,
}

impl Workers {
    /// Starts `count` workers (at least one).
    pub fn start(count: usize) -> io::Result<Arc<Self>> {
        let workers = (0..count.max(1))
            .map(spawn_worker)
            .collect::<io::Result<_>>()?;
        Ok(Arc::new(Self {
            workers,
            next: AtomicUsize::new(0),
        }))
    }

    /// One worker per CPU.
    pub fn per_cpu() -> io::Result<Arc<Self>> {
        Self::start(thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub fn count(&self) -> usize {
        self.workers.len()
    }

    /// Runs `fut` on worker `index` (modulo the count).
    pub fn spawn_on<F>(&self, index: usize, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.workers[index % self.workers.len()].handle.spawn(fut)
    }

    /// Hands an accepted connection to the least loaded worker, which
    /// registers it with its own reactor and runs `serve` on it.
    pub fn serve<F, Fut>(&self, stream: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                debug!("handing a connection to a worker: {e}");
                return;
            }
        };
        let worker = &self.workers[self.pick()];
        let load = Load::new(Arc::clone(&worker.load));
        worker.handle.spawn(async move {
            let _load = load;
            match TcpStream::from_std(stream) {
                Ok(s) => serve(s).await,
                Err(e) => debug!("registering a connection with a worker: {e}"),
            }
        });
    }

    fn pick(&self) -> usize {
        let n = self.workers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| (start + i) % n)
            .min_by_key(|&i| self.workers[i].load.load(Ordering::Relaxed))
            .unwrap_or(0)
    }
}

/// Counts a connection on its worker until dropped.
struct Load(Arc<AtomicUsize>);

impl Load {
    fn new(load: Arc<AtomicUsize>) -> Self {
        load.fetch_add(1, Ordering::Relaxed);
        Self(load)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn spawn_worker(index: usize) -> io::Result<Worker> {
    let runtime = Builder::new_current_thread().enable_all().build()?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    thread::Builder::new()
        .name(format!("lb-worker-{index}"))
        .spawn(move || {
            CURRENT.with(|c| c.set(Some(index)));
            // Returns when the sender is dropped; dropping the runtime then
            // cancels what still runs on it.
            let _ = runtime.block_on(stopped);
        })?;
    Ok(Worker {
        handle,
        load: Arc::new(AtomicUsize::new(0)),
        _stop: stop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_spread_and_run_on_their_worker() {
        let workers = Workers::start(2).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            let (s, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            workers.serve(s, move |s| async move {
                tx.send(current()).unwrap();
                // Held open: the worker counts it.
                std::future::pending::<()>().await;
                drop(s);
            });
        }
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(rx.recv().await.unwrap());
        }
        seen.sort();
        assert_eq!(seen, [Some(0), Some(0), Some(1), Some(1)]);
        assert_eq!(current(), None);
    }
}
