//! The connection pools of the target groups, found by group name: a reload
//! that leaves a group's pool settings alone keeps its pool (idle and warm
//! connections, the balancer's place), and listeners forwarding to the same
//! group share one pool, as ALB's target groups share their connections.
//!
//! A pool is built from its [`PoolKey`]; a reload that changes any part of
//! it (keep-alive, response timeout, warm connections, algorithm, TLS toward
//! targets, the bytes of the CA file included) starts a new pool. The old
//! one ends with the last request that holds it.
use std::{
    collections::HashMap,
    sync::{Arc, Weak},
};

use parking_lot::Mutex;

use super::pool::{GroupPool, PoolSettings};
use crate::{
    config::{Protocol, TargetGroup, TargetGroupTls},
    routable::RoutableWatch,
    tls::{TargetTls, TlsError},
    workers::Workers,
};

/// The pools in use, by target group.
pub struct Pools {
    routable: RoutableWatch,
    workers: Arc<Workers>,
    /// Every live pool of each group. Weak: a pool lives as long as a
    /// listener (or a request) uses it. More than one while requests of an
    /// older config finish, or after a reload failed half-way: the running
    /// listeners' pool must stay findable then.
    by_group: Mutex<HashMap<String, Vec<LivePool>>>,
}

/// A pool and what it was built from.
type LivePool = (PoolKey, Weak<GroupPool>);

/// Everything a pool is built from: pools of equal keys are
/// interchangeable.
#[derive(PartialEq)]
struct PoolKey {
    settings: PoolSettings,
    /// `https` groups: the TLS settings and the CA file's contents (a
    /// certificate renewed in place must reach new connections).
    tls: Option<(TargetGroupTls, Option<Vec<u8>>)>,
}

impl PoolKey {
    fn of(g: &TargetGroup) -> Self {
        let tls = match (&g.tls, g.protocol) {
            (Some(t), Protocol::Https) => {
                let ca = t.ca_file.as_ref().and_then(|p| std::fs::read(p).ok());
                Some((t.clone(), ca))
            }
            _ => None,
        };
        Self {
            settings: PoolSettings::from_group(g),
            tls,
        }
    }
}

impl Pools {
    pub fn new(routable: RoutableWatch, workers: Arc<Workers>) -> Self {
        Self {
            routable,
            workers,
            by_group: Mutex::new(HashMap::new()),
        }
    }

    /// The pool of group `g` (of a validated config): the one in use if it
    /// was built from the same settings, else a new one. Must run inside a
    /// tokio runtime: a new pool starts its maintenance task.
    pub fn get(&self, g: &TargetGroup) -> Result<Arc<GroupPool>, TlsError> {
        let key = PoolKey::of(g);
        let mut by_group = self.by_group.lock();
        by_group.retain(|_, pools| {
            pools.retain(|(_, pool)| pool.strong_count() > 0);
            !pools.is_empty()
        });
        let pools = by_group.entry(g.name.clone()).or_default();
        if let Some(pool) = pools
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, pool)| pool.upgrade())
        {
            return Ok(pool);
        }
        let pool = GroupPool::start(
            key.settings.clone(),
            target_tls(g)?,
            self.routable.clone(),
            Arc::clone(&self.workers),
        );
        pools.push((key, Arc::downgrade(&pool)));
        Ok(pool)
    }
}

/// TLS toward the targets of an `https` group (validation requires its
/// `[target_group.tls]`).
fn target_tls(g: &TargetGroup) -> Result<Option<TargetTls>, TlsError> {
    match (&g.tls, g.protocol) {
        (Some(t), Protocol::Https) => TargetTls::new(t).map(Some),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// The key of the one `https` group of a config whose CA file is `ca`,
    /// with `extra` in the group's table.
    fn key(ca: &std::path::Path, extra: &str) -> PoolKey {
        let text = format!(
            "[daemon]\ninterfaces = [\"eth0\"]\n\n[[target_group]]\nname = \"g\"\nprotocol = \"https\"\nport = 443\n{extra}\
             [target_group.tls]\nca_file = \"{}\"\n",
            ca.display()
        );
        let config = Config::parse(&text).expect("config");
        PoolKey::of(&config.target_groups[0])
    }

    #[test]
    fn a_pool_is_kept_only_while_everything_it_was_built_from_is_the_same() {
        let ca = std::env::temp_dir().join(format!("lb-pools-test-{}.pem", std::process::id()));
        std::fs::write(&ca, "one").expect("write");
        let before = key(&ca, "");
        assert!(before == key(&ca, ""));
        assert!(before != key(&ca, "keep_alive_timeout = 30\n"));
        assert!(before != key(&ca, "algorithm = \"least_outstanding_requests\"\n"));
        // The same path with new contents (a CA renewed in place).
        std::fs::write(&ca, "two").expect("write");
        assert!(before != key(&ca, ""));
        let _ = std::fs::remove_file(&ca);
    }
}
