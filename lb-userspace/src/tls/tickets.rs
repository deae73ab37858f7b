//! TLS session resumption, so a returning client resumes instead of doing a
//! full handshake: session tickets (RFC 8446 section 4.6.1; RFC 5077 for
//! TLS 1.2) and, for TLS 1.2 clients without tickets, session IDs. Each
//! listener has its own: rustls' ring `Ticketer`, whose ChaCha20-Poly1305
//! keys are made at random, replaced every 6 hours with the one before
//! still accepted (a ticket lives 12 hours at most), and a cache of
//! [`SESSION_IDS`] sessions. Both outlive the listener's `ServerConfig`,
//! which every reload builds anew: a reload costs no client its
//! resumption. The keys never leave the process; a daemon restart starts
//! with new ones.
use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};

use super::TlsError;

/// How many TLS 1.2 sessions by ID a listener remembers (rustls' default;
/// the oldest go first).
pub const SESSION_IDS: usize = 256;

/// One listener's resumption state, for its `ServerConfig`.
#[derive(Clone)]
pub struct Resumption {
    /// Encrypts and decrypts its session tickets.
    pub ticketer: Arc<dyn ProducesTickets>,
    /// Its TLS 1.2 sessions by session ID.
    pub sessions: Arc<dyn StoresServerSessions>,
}

/// The resumption state of the running listeners, by listener name.
#[derive(Default)]
pub struct Tickets(Mutex<HashMap<String, Resumption>>);

impl Tickets {
    /// `listener`'s resumption state, made on first use.
    pub fn for_listener(&self, listener: &str) -> Result<Resumption, TlsError> {
        let mut all = self.0.lock();
        if let Some(r) = all.get(listener) {
            return Ok(r.clone());
        }
        let r = fresh()?;
        all.insert(listener.to_owned(), r.clone());
        Ok(r)
    }

    /// Forgets the state of listeners that `keep` does not name (a removed
    /// listener's sessions are no use to another).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.0.lock().retain(|name, _| keep(name));
    }
}

/// A new rotating ticketer and an empty session cache.
pub fn fresh() -> Result<Resumption, TlsError> {
    Ok(Resumption {
        ticketer: rustls::crypto::ring::Ticketer::new().map_err(TlsError::Tickets)?,
        sessions: ServerSessionMemoryCache::new(SESSION_IDS),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_keeps_its_state_until_it_goes() {
        let t = Tickets::default();
        let a = t.for_listener("a").unwrap();
        let again = t.for_listener("a").unwrap();
        assert!(Arc::ptr_eq(&a.ticketer, &again.ticketer));
        assert!(Arc::ptr_eq(&a.sessions, &again.sessions));
        let b = t.for_listener("b").unwrap();
        assert!(!Arc::ptr_eq(&a.ticketer, &b.ticketer));
        assert!(!Arc::ptr_eq(&a.sessions, &b.sessions));
        // What one encrypts, only it decrypts.
        let ticket = a.ticketer.encrypt(b"session").expect("encrypt");
        assert_eq!(
            a.ticketer.decrypt(&ticket).as_deref(),
            Some(&b"session"[..])
        );
        assert_eq!(b.ticketer.decrypt(&ticket), None);
        // A session stored by ID is found through the state kept.
        assert!(a.sessions.put(b"id".to_vec(), b"state".to_vec()));
        assert_eq!(again.sessions.get(b"id").as_deref(), Some(&b"state"[..]));
        assert_eq!(b.sessions.get(b"id"), None);
        t.retain(|name| name == "b");
        assert!(!Arc::ptr_eq(
            &a.ticketer,
            &t.for_listener("a").unwrap().ticketer
        ));
    }
}
