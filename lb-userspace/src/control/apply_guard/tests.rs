use lb_common::{PROTO_TCP, ReplyKey, ReplyTargets, Target, VipAddrKey, VipKey, VipMeta};

use super::*;
use crate::{
    config::testing::{DAEMON, WEB, targets},
    net,
    state::{InjectedFailure, MemoryPlane},
};

/// A [`MemoryPlane`] whose next ring write, once armed, panics the way a
/// Maglev build thread's panic reaches the control loop: raised on another
/// thread and raised again on the applying one by `join().expect`.
#[derive(Default)]
struct PanicsOnce {
    inner: MemoryPlane,
    armed: bool,
}

impl DataPlane for PanicsOnce {
    type Error = InjectedFailure;

    fn write_ring(&mut self, slot: u32, ring: &[u32]) -> Result<(), Self::Error> {
        if std::mem::take(&mut self.armed) {
            std::thread::scope(|s| {
                s.spawn(|| panic!("the table could not be built"))
                    .join()
                    .expect("a Maglev build thread panicked")
            });
        }
        self.inner.write_ring(slot, ring)
    }
    fn set_target(&mut self, id: u32, target: &Target) -> Result<(), Self::Error> {
        self.inner.set_target(id, target)
    }
    fn set_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<(), Self::Error> {
        self.inner.set_vip(key, meta)
    }
    fn remove_vip(&mut self, key: &VipKey) -> Result<(), Self::Error> {
        self.inner.remove_vip(key)
    }
    fn set_vip_addr(&mut self, key: &VipAddrKey) -> Result<(), Self::Error> {
        self.inner.set_vip_addr(key)
    }
    fn remove_vip_addr(&mut self, key: &VipAddrKey) -> Result<(), Self::Error> {
        self.inner.remove_vip_addr(key)
    }
    fn set_replies(&mut self, key: &ReplyKey, targets: &ReplyTargets) -> Result<(), Self::Error> {
        self.inner.set_replies(key, targets)
    }
    fn remove_replies(&mut self, key: &ReplyKey) -> Result<(), Self::Error> {
        self.inner.remove_replies(key)
    }
    fn replies(&self) -> Result<Vec<(ReplyKey, ReplyTargets)>, Self::Error> {
        self.inner.replies()
    }
    fn set_port_flags(&mut self, port: u16, flags: u32) -> Result<(), Self::Error> {
        self.inner.set_port_flags(port, flags)
    }
    fn reset_vip_counters(&mut self, vip_id: u32) -> Result<(), Self::Error> {
        self.inner.reset_vip_counters(vip_id)
    }
    fn reset_target_counters(&mut self, id: u32) -> Result<(), Self::Error> {
        self.inner.reset_target_counters(id)
    }
    fn vips(&self) -> Result<Vec<(VipKey, VipMeta)>, Self::Error> {
        self.inner.vips()
    }
    fn targets(&self) -> Result<Vec<(u32, Target)>, Self::Error> {
        self.inner.targets()
    }
    fn vip_addrs(&self) -> Result<Vec<VipAddrKey>, Self::Error> {
        self.inner.vip_addrs()
    }
    fn port_flags(&self) -> Result<Vec<(u16, u32)>, Self::Error> {
        self.inner.port_flags()
    }
    fn read_ring(&self, slot: u32, size: u32) -> Result<Vec<u32>, Self::Error> {
        self.inner.read_ring(slot, size)
    }
}

/// One tcp listener balancing over `addresses`.
fn config(addresses: &[&str]) -> Config {
    let text = format!(
        "{DAEMON}maglev_table_size = 1009\n{WEB}{}",
        targets(addresses)
    );
    let config = Config::parse(&text).expect("config");
    config.validate().expect("valid");
    config
}

/// The target a new flow of each of 2,000 hashes would go to.
fn choices(plane: &MemoryPlane) -> Vec<Option<std::net::SocketAddr>> {
    let vip = net::vip_key("10.0.0.100".parse().expect("ip"), 80, PROTO_TCP);
    (0..2000)
        .map(|hash| {
            let id = plane.pick(&vip, hash)?;
            net::target_endpoint(&plane.targets[&id])
        })
        .collect()
}

#[test]
fn a_panic_while_programming_refuses_the_change_and_the_loop_carries_on() {
    let (one, two) = (config(&["10.1.0.2"]), config(&["10.1.0.2", "10.1.0.3"]));
    let mut plane = PanicsOnce::default();
    let mut state = Reconciler::new();
    apply_plan(&mut state, &mut plane, &one, &Plan::new()).expect("first apply");
    let running = choices(&plane.inner);

    plane.armed = true;
    let refused =
        apply_plan(&mut state, &mut plane, &two, &Plan::new()).expect_err("the panic is an error");
    match &refused {
        GuardedApplyError::Panicked { message } => assert!(
            message.starts_with("a Maglev build thread panicked"),
            "{message}"
        ),
        other => panic!("expected Panicked, got {other}"),
    }
    // The data path never saw the half-built change.
    assert_eq!(choices(&plane.inner), running);

    // What the control loop does next: the running config again, then
    // later the change once more; both apply.
    apply_plan(&mut state, &mut plane, &one, &Plan::new()).expect("running config again");
    assert_eq!(choices(&plane.inner), running);
    apply_plan(&mut state, &mut plane, &two, &Plan::new()).expect("the change, retried");

    // The maps are those a clean apply of the change writes.
    let (mut clean, mut fresh) = (MemoryPlane::new(), Reconciler::new());
    fresh
        .apply_plan(&mut clean, &two, &Plan::new())
        .expect("clean apply");
    assert_eq!(choices(&plane.inner), choices(&clean));
    assert_ne!(choices(&plane.inner), running, "the change took effect");
}
