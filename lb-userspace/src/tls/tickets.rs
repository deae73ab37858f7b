//! TLS session tickets (RFC 8446 section 4.6.1; RFC 5077 for TLS 1.2), so
//! a returning client resumes instead of doing a full handshake. One
//! ticketer per listener: rustls' ring `Ticketer`, whose ChaCha20-Poly1305
//! keys are made at random, replaced every 6 hours with the one before
//! still accepted (a ticket lives 12 hours at most). The ticketers outlive
//! the listener's `ServerConfig`, which every reload builds anew: a reload
//! costs no client its resumption. The keys never leave the process; a
//! daemon restart starts with new ones.
use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;
use rustls::server::ProducesTickets;

use super::TlsError;

/// The ticketers of the running listeners, by listener name.
#[derive(Default)]
pub struct Tickets(Mutex<HashMap<String, Arc<dyn ProducesTickets>>>);

impl Tickets {
    /// `listener`'s ticketer, made on first use.
    pub fn for_listener(&self, listener: &str) -> Result<Arc<dyn ProducesTickets>, TlsError> {
        let mut all = self.0.lock();
        if let Some(t) = all.get(listener) {
            return Ok(Arc::clone(t));
        }
        let t = fresh()?;
        all.insert(listener.to_owned(), Arc::clone(&t));
        Ok(t)
    }

    /// Forgets the ticketers of listeners that `keep` does not name (a
    /// removed listener's tickets are no use to another).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.0.lock().retain(|name, _| keep(name));
    }
}

/// A new rotating ticketer.
pub fn fresh() -> Result<Arc<dyn ProducesTickets>, TlsError> {
    rustls::crypto::ring::Ticketer::new().map_err(TlsError::Tickets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_keeps_its_ticketer_until_it_goes() {
        let t = Tickets::default();
        let a = t.for_listener("a").unwrap();
        assert!(Arc::ptr_eq(&a, &t.for_listener("a").unwrap()));
        assert!(!Arc::ptr_eq(&a, &t.for_listener("b").unwrap()));
        // What one encrypts, only it decrypts.
        let ticket = a.encrypt(b"session").expect("encrypt");
        assert_eq!(a.decrypt(&ticket).as_deref(), Some(&b"session"[..]));
        assert_eq!(t.for_listener("b").unwrap().decrypt(&ticket), None);
        t.retain(|name| name == "b");
        assert!(!Arc::ptr_eq(&a, &t.for_listener("a").unwrap()));
    }
}
