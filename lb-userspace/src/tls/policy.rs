//! ELB's security policy names as rustls protocol versions and cipher
//! suites. The ring provider offers only ECDHE key exchange and AEAD
//! ciphers, so every policy here has forward secrecy and no CBC, RC4 or
//! 3DES; the policies differ in versions and in the TLS 1.2 suites.
use rustls::{
    CipherSuite, SupportedCipherSuite, SupportedProtocolVersion,
    crypto::{CryptoProvider, ring},
    version::{TLS12, TLS13},
};

use crate::config::SecurityPolicy;

/// Protocol versions a policy allows.
pub fn versions(policy: SecurityPolicy) -> &'static [&'static SupportedProtocolVersion] {
    static BOTH: [&SupportedProtocolVersion; 2] = [&TLS13, &TLS12];
    static ONLY_13: [&SupportedProtocolVersion; 1] = [&TLS13];
    static ONLY_12: [&SupportedProtocolVersion; 1] = [&TLS12];
    match policy {
        SecurityPolicy::Tls13Tls12 | SecurityPolicy::Tls13Tls12Restricted => &BOTH,
        SecurityPolicy::Tls13Only => &ONLY_13,
        SecurityPolicy::Fs12Restricted => &ONLY_12,
    }
}

/// The ring provider with the cipher suites of `policy`, in ELB's order
/// (the server imposes it): TLS 1.3 AES-128-GCM, AES-256-GCM,
/// ChaCha20-Poly1305; TLS 1.2 ECDHE with AES-128-GCM, then AES-256-GCM
/// (ECDSA before RSA), then ChaCha20-Poly1305 where the policy has it.
pub fn provider(policy: SecurityPolicy) -> CryptoProvider {
    let mut provider = ring::default_provider();
    provider.cipher_suites.retain(|s| allowed(policy, s));
    provider.cipher_suites.sort_by_key(|s| rank(s.suite()));
    provider
}

/// Place of `s` in ELB's order; unknown suites last.
fn rank(s: CipherSuite) -> usize {
    const ORDER: [CipherSuite; 9] = [
        CipherSuite::TLS13_AES_128_GCM_SHA256,
        CipherSuite::TLS13_AES_256_GCM_SHA384,
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    ORDER.iter().position(|o| *o == s).unwrap_or(ORDER.len())
}

/// Whether `policy` offers `suite` (the version filter is separate).
fn allowed(policy: SecurityPolicy, suite: &SupportedCipherSuite) -> bool {
    let s = suite.suite();
    match policy {
        SecurityPolicy::Tls13Tls12 | SecurityPolicy::Tls13Only => true,
        // "Res": TLS 1.2 restricted to ECDHE with AES-GCM.
        SecurityPolicy::Tls13Tls12Restricted | SecurityPolicy::Fs12Restricted => {
            matches!(suite, SupportedCipherSuite::Tls13(_)) || is_ecdhe_aes_gcm(s)
        }
    }
}

fn is_ecdhe_aes_gcm(s: CipherSuite) -> bool {
    matches!(
        s,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
    )
}
