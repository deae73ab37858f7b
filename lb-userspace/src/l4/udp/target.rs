//! A flow's side toward its target: a UDP socket connected to the target
//! from an ephemeral port (the kernel then delivers only that target's
//! datagrams to it), and the task that sends what the target answers back
//! to the client from the listener's socket.
//!
//! ICMP errors about the flow's datagrams (port or host unreachable) come
//! back on the connected socket as an error of its next receive or send
//! (`ECONNREFUSED`, `EHOSTUNREACH`, …). They are counted per target and
//! the flow carries on: the error says nothing about the next datagram.
use std::{
    cell::RefCell,
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use prometheus_client::metrics::counter::Counter;
use tokio::{net::UdpSocket, task::JoinHandle, time::Instant};
use tracing::debug;

use super::MAX_DATAGRAM;
use crate::l4::{
    counted::Activity,
    metrics::{
        ByteLabels, Direction, DropReason, L4ListenerLabels, L4Metrics, L4TargetLabels, Open,
    },
};

/// Errors in a row after which the reply task pauses, in case a socket
/// error does not clear (none is known to; ICMP errors clear when read).
const ERRORS_BEFORE_PAUSE: u32 = 8;
const ERROR_PAUSE: Duration = Duration::from_millis(10);

thread_local! {
    /// Every reply task of a worker thread receives into this one buffer:
    /// it is only borrowed between a receive and the matching send, with
    /// no await in between, so 65,536 flows do not each hold 64 KiB.
    static REPLY_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_DATAGRAM]);
}

/// Packets and bytes of one direction of one flow.
#[derive(Clone)]
struct Traffic {
    packets: Counter,
    bytes: Counter,
}

impl Traffic {
    fn of(metrics: &L4Metrics, t: &L4TargetLabels, direction: Direction) -> Self {
        let labels = ByteLabels {
            listener: t.listener.clone(),
            target: t.target.clone(),
            direction,
        };
        Self {
            packets: metrics.udp_packets.get_or_create(&labels).clone(),
            bytes: metrics.bytes.get_or_create(&labels).clone(),
        }
    }

    fn count(&self, len: usize) {
        self.packets.inc();
        self.bytes.inc_by(len as u64);
    }
}

/// What the relay holds per flow. Dropping it stops the reply task and,
/// once that is gone, closes the socket.
pub struct FlowIo {
    socket: Arc<UdpSocket>,
    replies: Option<JoinHandle<()>>,
    to_target: Traffic,
    errors: Counter,
    /// The listener's and the target's active-flow gauges.
    _open: [Open; 2],
}

/// What the reply task needs besides the flow's socket.
pub struct ReplyPath {
    /// The listener's socket: replies leave from the VIP and port.
    pub listener: Arc<UdpSocket>,
    pub client: SocketAddr,
    pub activity: Arc<Activity>,
    pub metrics: Arc<L4Metrics>,
}

impl FlowIo {
    /// Opens the flow's socket toward `target` and starts relaying its
    /// replies. Synchronous: binding and connecting a UDP socket do not
    /// wait for the network.
    pub fn open(target: SocketAddr, listener: &str, back: ReplyPath) -> io::Result<Self> {
        let any: SocketAddr = match target {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let std_socket = std::net::UdpSocket::bind(any)?;
        std_socket.connect(target)?;
        std_socket.set_nonblocking(true)?;
        let socket = Arc::new(UdpSocket::from_std(std_socket)?);
        let labels = L4TargetLabels {
            listener: listener.to_owned(),
            target: target.to_string(),
        };
        let m = &back.metrics;
        let open = [
            Open::new(
                m.udp_active_flows
                    .get_or_create(&L4ListenerLabels {
                        listener: listener.to_owned(),
                    })
                    .clone(),
            ),
            Open::new(m.udp_target_active_flows.get_or_create(&labels).clone()),
        ];
        let to_target = Traffic::of(m, &labels, Direction::ToTarget);
        let to_client = Traffic::of(m, &labels, Direction::ToClient);
        let errors = m.udp_target_errors.get_or_create(&labels).clone();
        let replies = tokio::spawn(relay_replies(
            Arc::clone(&socket),
            back,
            to_client,
            errors.clone(),
            listener.to_owned(),
        ));
        Ok(Self {
            socket,
            replies: Some(replies),
            to_target,
            errors,
            _open: open,
        })
    }

    /// Sends a client's datagram to the target; `false` if it could not be
    /// sent (counted as a target error; the caller counts the drop).
    pub async fn send(&self, datagram: &[u8]) -> bool {
        // A pending ICMP error about an earlier datagram fails this send
        // without sending it (and is cleared): one more try is for the
        // datagram itself.
        for _ in 0..2 {
            match self.socket.send(datagram).await {
                Ok(_) => {
                    self.to_target.count(datagram.len());
                    return true;
                }
                Err(e) => {
                    self.errors.inc();
                    debug!(error = %e, "sending to the target failed");
                }
            }
        }
        false
    }

    /// Stops the reply task; await the handle to know the task (and its
    /// hold on the listener's socket) is gone.
    pub fn stop(mut self) -> Option<JoinHandle<()>> {
        let task = self.replies.take()?;
        task.abort();
        Some(task)
    }
}

impl Drop for FlowIo {
    fn drop(&mut self) {
        if let Some(task) = &self.replies {
            task.abort();
        }
    }
}

/// What one receive on the flow's socket led to.
enum Step {
    Sent,
    /// The listener's socket was not ready: send this copy when it is.
    Later(Vec<u8>),
    ReplyFailed(io::Error),
    /// Nothing to read after all (spurious wake-up).
    Nothing,
    TargetError(io::Error),
}

/// Until aborted: every datagram the target sends goes to the client.
async fn relay_replies(
    socket: Arc<UdpSocket>,
    back: ReplyPath,
    to_client: Traffic,
    errors: Counter,
    listener: String,
) {
    let mut errors_in_row = 0u32;
    loop {
        if let Err(e) = socket.readable().await {
            // Only when the runtime is shutting down.
            debug!(%listener, client = %back.client, error = %e, "flow socket unusable");
            return;
        }
        let step = REPLY_BUF.with_borrow_mut(|buf| match socket.try_recv(buf) {
            Ok(n) => {
                back.activity.touch_at(Instant::now());
                let reply = &buf[..n];
                match back.listener.try_send_to(reply, back.client) {
                    Ok(_) => {
                        to_client.count(n);
                        Step::Sent
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::Later(reply.to_vec()),
                    Err(e) => Step::ReplyFailed(e),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::Nothing,
            Err(e) => Step::TargetError(e),
        });
        match step {
            Step::Sent | Step::Nothing => errors_in_row = 0,
            Step::Later(reply) => match back.listener.send_to(&reply, back.client).await {
                Ok(_) => to_client.count(reply.len()),
                Err(e) => reply_failed(&back, &listener, &e),
            },
            Step::ReplyFailed(e) => reply_failed(&back, &listener, &e),
            Step::TargetError(e) => {
                errors.inc();
                debug!(%listener, client = %back.client, error = %e, "target socket error");
                errors_in_row += 1;
                if errors_in_row >= ERRORS_BEFORE_PAUSE {
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            }
        }
    }
}

fn reply_failed(back: &ReplyPath, listener: &str, e: &io::Error) {
    back.metrics.dropped(listener, DropReason::Reply);
    debug!(%listener, client = %back.client, error = %e, "sending a reply to the client failed");
}
