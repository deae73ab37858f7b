//! [`Authorizer`]: who is calling ([`Authorizer::authenticate`]) and whether
//! they may ([`Authorizer::authorize`]), evaluated like IAM identity-based
//! policies: default deny, an explicit Deny beats any Allow.
use std::{collections::HashMap, fmt, sync::Arc};

use sha2::{Digest, Sha256};

use super::Action;
use crate::config::{Api, Effect, Policy};
use crate::iam::resource::matches as covers;
use crate::wildcard::{self, Case};

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// uid 0 on the Unix socket (the server checks `SO_PEERCRED`): allowed
    /// everything, like the account root user.
    Root,
    /// A bearer token, by its `[[api.token]]` name.
    Token(String),
}

impl fmt::Display for Principal {
    /// As in messages: `root`, `token/<name>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Root => f.write_str("root"),
            Principal::Token(name) => write!(f, "token/{name}"),
        }
    }
}

/// Why a request is not authenticated (HTTP 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing authentication token")]
    MissingToken,
    #[error("the token is not valid")]
    InvalidToken,
}

/// The verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No statement allows it (the default).
    ImplicitDeny,
    /// A Deny statement matched: the first one found, by policy name and sid.
    ExplicitDeny {
        policy: String,
        sid: Option<String>,
    },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

/// One token as the authorizer keeps it.
#[derive(Debug)]
struct TokenEntry {
    name: String,
    digest: [u8; 32],
    /// Names into `Authorizer::policies`, in the token's order.
    policies: Vec<String>,
}

/// Built from `[api]`; rebuild it on reload (cheap) and swap.
#[derive(Debug, Default)]
pub struct Authorizer {
    tokens: Vec<TokenEntry>,
    policies: HashMap<String, Arc<Policy>>,
}

/// Lowercase hex SHA-256 of a token secret: what `[[api.token]].sha256`
/// holds (`lb token hash`).
pub fn token_digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new random token secret: `lb_` and 32 random bytes in hex, read from
/// the kernel's CSPRNG.
pub fn generate_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(format!("lb_{}", hex::encode(bytes)))
}

/// The value of an `Authorization` header's `Bearer` credentials; `None`
/// for another scheme or an empty token.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The password of an `Authorization` header's `Basic` credentials
/// (RFC 7617: base64 of `user:password`; the user is ignored); `None` for
/// another scheme, bad base64, non-UTF-8 or an empty password. Browsers
/// can send a token only this way, so the status page accepts it.
pub fn basic_password(authorization: &str) -> Option<String> {
    use base64::Engine;
    let (scheme, encoded) = authorization.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    (!password.is_empty()).then(|| password.to_owned())
}

/// Equality that takes the same time wherever the inputs differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl Authorizer {
    /// From a validated `[api]` (tokens with malformed digests, which
    /// validation rejects, never authenticate).
    pub fn new(api: &Api) -> Self {
        let tokens = api
            .tokens
            .iter()
            .filter_map(|t| {
                let digest = <[u8; 32]>::try_from(hex::decode(&t.sha256).ok()?).ok()?;
                Some(TokenEntry {
                    name: t.name.clone(),
                    digest,
                    policies: t.policies.clone(),
                })
            })
            .collect();
        let policies = api
            .policies
            .iter()
            .map(|p| (p.name.clone(), Arc::new(p.clone())))
            .collect();
        Authorizer { tokens, policies }
    }

    /// The principal behind a bearer token (see [`bearer_token`]). Every
    /// configured digest is compared, in constant time each, so timing says
    /// nothing about which or how much matched.
    pub fn authenticate(&self, bearer: Option<&str>) -> Result<Principal, AuthError> {
        let secret = bearer.ok_or(AuthError::MissingToken)?;
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut found = None;
        for t in &self.tokens {
            if constant_time_eq(&t.digest, &digest) && found.is_none() {
                found = Some(t.name.clone());
            }
        }
        found.map(Principal::Token).ok_or(AuthError::InvalidToken)
    }

    /// Whether `principal` may perform `action` on `resource` (see
    /// [`super::resource`] for names).
    pub fn authorize(&self, principal: &Principal, action: Action, resource: &str) -> Decision {
        let name = match principal {
            Principal::Root => return Decision::Allow,
            Principal::Token(name) => name,
        };
        let Some(token) = self.tokens.iter().find(|t| &t.name == name) else {
            return Decision::ImplicitDeny;
        };
        let mut allowed = false;
        for policy in token.policies.iter().filter_map(|p| self.policies.get(p)) {
            for s in &policy.statements {
                let applies = s
                    .action
                    .iter()
                    .any(|a| wildcard::matches(a, action.as_str(), Case::IgnoreAscii))
                    && s.resource.iter().any(|r| covers(r, resource));
                if !applies {
                    continue;
                }
                match s.effect {
                    Effect::Deny => {
                        return Decision::ExplicitDeny {
                            policy: policy.name.clone(),
                            sid: s.sid.clone(),
                        };
                    }
                    Effect::Allow => allowed = true,
                }
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::ImplicitDeny
        }
    }
}
