//! The relay on loopback, in process: real sockets, targets that answer
//! with their name, a routable view the test changes by hand, and the
//! counters the namespace tests cannot see well.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use prometheus_client::registry::Registry;
use tokio::{net::UdpSocket, sync::watch, task::JoinHandle, time::timeout};

use crate::{
    config::{Config, Protocol},
    http::HttpMetrics,
    l4::{
        L4Metrics,
        metrics::{
            ByteLabels, Direction, DropLabels, DropReason, L4ListenerLabels, L4TargetLabels,
        },
        udp::{MAX_DATAGRAM, UdpRoute},
    },
    listeners::{Listeners, Route, Running, Socket},
    routable::{self, Routable, RoutableTarget},
};

const WAIT: Duration = Duration::from_secs(3);
/// Largest UDP payload over IPv4.
const MAX_V4_PAYLOAD: usize = 65_507;

/// A UDP server on loopback answering `"<name> <payload>"`, or the payload
/// alone when that would not fit in a datagram.
struct UdpTarget {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl UdpTarget {
    async fn start(name: &'static str) -> Self {
        Self::on(name, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    async fn on(name: &'static str, addr: SocketAddr) -> Self {
        let socket = UdpSocket::bind(addr).await.expect("bind target");
        let addr = socket.local_addr().expect("target addr");
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                let mut reply = format!("{name} ").into_bytes();
                reply.extend_from_slice(&buf[..n]);
                if reply.len() > MAX_V4_PAYLOAD {
                    reply = buf[..n].to_vec();
                }
                if socket.send_to(&reply, peer).await.is_err() {
                    break;
                }
            }
        });
        Self { addr, task }
    }
}

impl Drop for UdpTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback port no socket holds right now.
fn free_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

fn listener_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A config with udp listener `u` on `port` in front of `targets`
/// (address, weight); parsed, not validated (loopback is no VIP).
fn config(port: u16, targets: &[(SocketAddr, u32)], group_extra: &str) -> Config {
    let mut text = format!(
        "[daemon]\ndataplane = \"userspace\"\n\n[[listener]]\nname = \"u\"\nprotocol = \"udp\"\naddress = \"127.0.0.1\"\nport = {port}\ntarget_group = \"g\"\n\n[[target_group]]\nname = \"g\"\nprotocol = \"udp\"\nport = 1\n{group_extra}\n"
    );
    for (addr, weight) in targets {
        text += &format!(
            "  [[target_group.target]]\n  address = \"{}\"\n  port = {}\n  weight = {weight}\n",
            addr.ip(),
            addr.port()
        );
    }
    Config::parse(&text).expect("parse")
}

/// A client socket and what it asks through the relay.
struct Client {
    socket: UdpSocket,
}

impl Client {
    async fn new() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
        Self { socket }
    }

    /// Sends `payload` and returns (reply source, reply).
    async fn ask(&self, to: SocketAddr, payload: &[u8]) -> (SocketAddr, Vec<u8>) {
        self.socket.send_to(payload, to).await.expect("send");
        self.reply().await
    }

    async fn reply(&self) -> (SocketAddr, Vec<u8>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let (n, from) = timeout(WAIT, self.socket.recv_from(&mut buf))
            .await
            .expect("a reply in time")
            .expect("recv");
        buf.truncate(n);
        (from, buf)
    }

    /// Name of the target that answered `payload`; the reply must come
    /// from the listener's address.
    async fn target(&self, to: SocketAddr, payload: &str) -> String {
        let (from, reply) = self.ask(to, payload.as_bytes()).await;
        assert_eq!(from, to, "the reply must come from the listener");
        let text = String::from_utf8(reply).expect("text");
        let (name, echoed) = text.split_once(' ').expect("name and payload");
        assert_eq!(echoed, payload);
        name.to_owned()
    }
}

fn labels() -> L4ListenerLabels {
    L4ListenerLabels {
        listener: "u".to_owned(),
    }
}

fn active(m: &L4Metrics) -> i64 {
    m.udp_active_flows.get_or_create(&labels()).get()
}

fn dropped(m: &L4Metrics, reason: DropReason) -> u64 {
    m.udp_dropped
        .get_or_create(&DropLabels {
            listener: "u".to_owned(),
            reason,
        })
        .get()
}

fn target_labels(t: SocketAddr) -> L4TargetLabels {
    L4TargetLabels {
        listener: "u".to_owned(),
        target: t.to_string(),
    }
}

/// Polls `done` until it holds; panics with `what` after [`WAIT`].
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "not {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The proxies serving `config`, with the routable sender to change the
/// view by hand.
async fn serve(config: &Config) -> (Listeners, Arc<L4Metrics>, watch::Sender<Arc<Routable>>) {
    let metrics = L4Metrics::register(&mut Registry::default());
    let (tx, rx) = routable::channel(Routable::from_config(config));
    let workers = crate::workers::Workers::start(1).expect("workers");
    let mut proxies = Listeners::new(rx, Arc::clone(&metrics), HttpMetrics::default(), workers);
    let report = proxies.apply(config, true).await.expect("apply");
    assert_eq!(report.started, ["u"]);
    (proxies, metrics, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_come_from_the_listener_flows_follow_weights_and_stick() {
    let (t1, t2) = (UdpTarget::start("t1").await, UdpTarget::start("t2").await);
    let port = free_port();
    let config = config(port, &[(t1.addr, 2), (t2.addr, 1)], "");
    let (proxies, metrics, _tx) = serve(&config).await;
    let vip = listener_addr(port);

    // Six clients: round robin by weight, two to one.
    let mut clients = Vec::new();
    let mut by_target = BTreeMap::new();
    for i in 0..6 {
        let c = Client::new().await;
        let name = c.target(vip, &format!("hello {i}")).await;
        *by_target.entry(name.clone()).or_insert(0) += 1;
        clients.push((c, name));
    }
    assert_eq!(
        by_target,
        BTreeMap::from([("t1".into(), 4), ("t2".into(), 2)])
    );
    // Each flow stays on its target.
    for (c, name) in &clients {
        for j in 0..20 {
            assert_eq!(&c.target(vip, &format!("again {j}")).await, name);
        }
    }
    assert_eq!(active(&metrics), 6);
    assert_eq!(metrics.udp_flows.get_or_create(&labels()).get(), 6);
    // What `lb flows` shows: every client with its target.
    let flows = proxies.udp_flows(100).await;
    assert_eq!(flows.len(), 1);
    let (at, snapshot) = &flows[0];
    assert_eq!(*at, vip);
    assert_eq!((snapshot.entries, snapshot.active), (6, 6));
    let mut listed: Vec<(SocketAddr, SocketAddr)> = snapshot
        .sample
        .iter()
        .map(|f| (f.client, f.target))
        .collect();
    listed.sort();
    let mut expected = Vec::new();
    for (c, name) in &clients {
        let target = if name == "t1" { t1.addr } else { t2.addr };
        expected.push((c.socket.local_addr().expect("addr"), target));
    }
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(proxies.udp_flows(2).await[0].1.sample.len(), 2);
    let t1_flows = metrics
        .udp_target_active_flows
        .get_or_create(&target_labels(t1.addr))
        .get();
    assert_eq!(t1_flows, 4);
    let to_t1 = ByteLabels {
        listener: "u".to_owned(),
        target: t1.addr.to_string(),
        direction: Direction::ToTarget,
    };
    assert_eq!(metrics.udp_packets.get_or_create(&to_t1).get(), 4 * 21);
    let back = ByteLabels {
        direction: Direction::ToClient,
        ..to_t1.clone()
    };
    eventually("replies counted", || {
        metrics.udp_packets.get_or_create(&back).get() == 4 * 21
    })
    .await;
    // "hello 0" and "hello 1" went to t1 (7 bytes each), as did 20
    // "again j" of each of four clients.
    let again: u64 = (0..20).map(|j: u64| 6 + j.to_string().len() as u64).sum();
    let hellos = 4 * 7;
    assert_eq!(
        metrics.bytes.get_or_create(&to_t1).get(),
        hellos + 4 * again
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_keeps_flows_and_a_target_that_left_loses_them() {
    let (t1, t2) = (UdpTarget::start("t1").await, UdpTarget::start("t2").await);
    let port = free_port();
    let config = config(port, &[(t1.addr, 1), (t2.addr, 1)], "");
    let (_proxies, metrics, tx) = serve(&config).await;
    let vip = listener_addr(port);
    let on_t1 = Client::new().await;
    assert_eq!(on_t1.target(vip, "first").await, "t1");

    // t1 drains: no new flows, but its flow stays.
    let only_t2 = vec![RoutableTarget {
        endpoint: t2.addr,
        weight: 1,
    }];
    tx.send_replace(Arc::new(Routable {
        groups: BTreeMap::from([("g".into(), only_t2.clone())]),
        keep_flows: BTreeMap::from([("g".into(), BTreeSet::from([t1.addr, t2.addr]))]),
    }));
    // Kept open to the end: a dropped client's port could be handed to the
    // next one, whose datagrams would then join its flow.
    let mut new_clients = Vec::new();
    for i in 0..3 {
        let c = Client::new().await;
        assert_eq!(c.target(vip, &format!("new {i}")).await, "t2");
        new_clients.push(c);
    }
    assert_eq!(on_t1.target(vip, "while draining").await, "t1");

    // t1 is gone (drained, or down): its flow moves on its next datagram.
    tx.send_replace(Arc::new(Routable {
        groups: BTreeMap::from([("g".into(), only_t2)]),
        keep_flows: BTreeMap::from([("g".into(), BTreeSet::from([t2.addr]))]),
    }));
    eventually("t1's flow removed", || {
        metrics
            .udp_target_active_flows
            .get_or_create(&target_labels(t1.addr))
            .get()
            == 0
    })
    .await;
    assert_eq!(on_t1.target(vip, "moved").await, "t2");
    assert_eq!(on_t1.target(vip, "and stays").await, "t2");
    assert_eq!(active(&metrics), 4);
    assert_eq!(metrics.udp_flows.get_or_create(&labels()).get(), 5);
    drop(new_clients);

    // No target at all: datagrams of new flows are dropped and counted.
    tx.send_replace(Arc::new(Routable::default()));
    let c = Client::new().await;
    c.socket.send_to(b"nobody", vip).await.expect("send");
    eventually("a no-target drop", || {
        dropped(&metrics, DropReason::NoTarget) == 1
    })
    .await;
    assert_eq!(active(&metrics), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icmp_errors_from_a_target_are_counted_and_the_flow_carries_on() {
    // Nothing listens on the target's port yet: the kernel answers with
    // ICMP port unreachable.
    let dead = listener_addr(free_port());
    let port = free_port();
    let config = config(port, &[(dead, 1)], "");
    let (_proxies, metrics, _tx) = serve(&config).await;
    let vip = listener_addr(port);
    let c = Client::new().await;
    for i in 0..3 {
        c.socket
            .send_to(format!("lost {i}").as_bytes(), vip)
            .await
            .expect("send");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let errors = metrics
        .udp_target_errors
        .get_or_create(&target_labels(dead));
    eventually("target errors counted", || errors.get() >= 2).await;
    // The target comes up on that port: the same flow now gets answers.
    let _t = UdpTarget::on("back", dead).await;
    assert_eq!(c.target(vip, "hello again").await, "back");
    assert_eq!(active(&metrics), 1);
    assert_eq!(metrics.udp_flows.get_or_create(&labels()).get(), 1);
    assert_eq!(dropped(&metrics, DropReason::Send), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_datagrams_pass_whole_both_ways() {
    let t = UdpTarget::start("t").await;
    let port = free_port();
    let config = config(port, &[(t.addr, 1)], "");
    let (_proxies, _metrics, _tx) = serve(&config).await;
    let vip = listener_addr(port);
    let c = Client::new().await;
    let big: Vec<u8> = (0..MAX_V4_PAYLOAD).map(|i| (i % 251) as u8).collect();
    let (from, reply) = c.ask(vip, &big).await;
    assert_eq!(from, vip);
    assert_eq!(reply.len(), big.len());
    assert!(reply == big, "the datagram came back changed");
    // An empty datagram is a datagram too.
    let (_, reply) = c.ask(vip, b"").await;
    assert_eq!(reply, b"t ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_flows_expire_and_free_their_sockets() {
    let t = UdpTarget::start("t").await;
    let port = free_port();
    // Below the validated minimum: this config is only parsed.
    let config = config(port, &[(t.addr, 1)], "udp_idle_timeout = 1");
    let (_proxies, metrics, _tx) = serve(&config).await;
    let vip = listener_addr(port);
    let c = Client::new().await;
    assert_eq!(c.target(vip, "one").await, "t");
    assert_eq!(active(&metrics), 1);
    // Within the timeout and the sweep after it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(active(&metrics), 0);
    assert_eq!(c.target(vip, "two").await, "t");
    assert_eq!(metrics.udp_flows.get_or_create(&labels()).get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_flow_table_drops_new_clients_and_serves_known_ones() {
    let t = UdpTarget::start("t").await;
    let port = free_port();
    let config = config(port, &[(t.addr, 1)], "");
    let metrics = L4Metrics::register(&mut Registry::default());
    let (_tx, rx) = routable::channel(Routable::from_config(&config));
    let vip = listener_addr(port);
    let route = UdpRoute {
        listener: "u".into(),
        target_group: "g".into(),
        idle_timeout: Duration::from_secs(120),
        max_flows: 2,
    };
    let socket = Socket::bind(vip, Protocol::Udp).expect("bind");
    let running = Running::start(
        "u",
        Protocol::Udp,
        socket,
        Route::Udp(Arc::new(route)),
        rx,
        Arc::clone(&metrics),
        crate::workers::Workers::start(1).expect("workers"),
    );
    let (a, b, c) = (
        Client::new().await,
        Client::new().await,
        Client::new().await,
    );
    assert_eq!(a.target(vip, "a").await, "t");
    assert_eq!(b.target(vip, "b").await, "t");
    c.socket.send_to(b"c", vip).await.expect("send");
    eventually("a table-full drop", || {
        dropped(&metrics, DropReason::FlowTableFull) == 1
    })
    .await;
    assert_eq!(a.target(vip, "a again").await, "t");
    assert_eq!(active(&metrics), 2);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_flows_and_removal_frees_them_and_the_port() {
    let (t1, t2) = (UdpTarget::start("t1").await, UdpTarget::start("t2").await);
    let port = free_port();
    let first = config(port, &[(t1.addr, 1)], "");
    let (mut proxies, metrics, _tx) = serve(&first).await;
    let vip = listener_addr(port);
    let c = Client::new().await;
    assert_eq!(c.target(vip, "before").await, "t1");

    // A reload that adds a target and changes the timeout keeps the
    // listener, its socket and its flow.
    let second = config(
        port,
        &[(t1.addr, 1), (t2.addr, 1)],
        "udp_idle_timeout = 300",
    );
    let report = proxies.apply(&second, true).await.expect("reload");
    assert_eq!(report.kept, ["u"]);
    assert_eq!(c.target(vip, "after").await, "t1");
    assert_eq!(metrics.udp_flows.get_or_create(&labels()).get(), 1);

    // Without the listener: flows gone, port free.
    let mut none = second.clone();
    none.listeners.clear();
    let report = proxies.apply(&none, true).await.expect("remove");
    assert_eq!(report.stopped, ["u"]);
    assert_eq!(active(&metrics), 0);
    std::net::UdpSocket::bind(vip).expect("the port is free again");
}
