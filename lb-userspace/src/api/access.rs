//! Who is asking and whether they may: the check every route runs before
//! its handler.
//!
//! A uid-0 peer on the Unix socket is root (the kernel vouches for the uid
//! through SO_PEERCRED; file permissions already limit who can connect).
//! Everyone else — other local users and every TCP client — presents
//! `Authorization: Bearer <token>`, and the token's policies decide. A token
//! sent by root counts too: it is how root tries out a restricted token.
use std::{borrow::Cow, net::SocketAddr};

use axum::{
    extract::{ConnectInfo, RawPathParams, Request, State, rejection::RawPathParamsRejection},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{
    HeaderMap, HeaderValue,
    header::{AUTHORIZATION, WWW_AUTHENTICATE},
};

/// The Basic challenge of the status page's 401 (RFC 7617), next to
/// `Bearer`.
pub const BASIC_CHALLENGE: &str = "Basic realm=\"lb\", charset=\"UTF-8\"";

use super::{
    auth::{AuthError, Authorizer, Principal, basic_password, bearer_token},
    error::ApiError,
    table::{ApiState, Route},
};

/// The other end of a connection, recorded when it is accepted
/// ([`super::conn`]) and given to every request as `ConnectInfo<Peer>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A Unix-socket peer; `uid` is `None` if SO_PEERCRED failed.
    Unix {
        uid: Option<u32>,
    },
    Tcp(SocketAddr),
}

impl Peer {
    /// A Unix-socket peer, its uid from SO_PEERCRED.
    pub fn of_unix(stream: &tokio::net::UnixStream) -> Self {
        let uid = stream.peer_cred().ok().map(|c| c.uid());
        Peer::Unix { uid }
    }
}

/// The principal behind a request: the bearer token's if one is sent (so
/// root can try out a restricted token), else root for a uid-0 peer on the
/// Unix socket; anyone else without a token is unauthenticated.
pub fn principal(
    peer: Peer,
    headers: &HeaderMap,
    authz: &Authorizer,
) -> Result<Principal, AuthError> {
    principal_from(peer, headers, authz, false)
}

/// [`principal`] for the status page, which also takes the token as the
/// password of HTTP Basic credentials: a browser cannot send a bearer
/// token, but asks for Basic credentials on a 401 that offers them. Only
/// the page (a GET that changes nothing) takes them, so credentials a
/// browser keeps and sends on its own can never make a change.
pub fn page_principal(
    peer: Peer,
    headers: &HeaderMap,
    authz: &Authorizer,
) -> Result<Principal, AuthError> {
    principal_from(peer, headers, authz, true)
}

fn principal_from(
    peer: Peer,
    headers: &HeaderMap,
    authz: &Authorizer,
    basic: bool,
) -> Result<Principal, AuthError> {
    let value = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let secret = match value {
        Some(v) if basic && bearer_token(v).is_none() => basic_password(v).map(Cow::Owned),
        Some(v) => bearer_token(v).map(Cow::Borrowed),
        None => None,
    };
    match secret {
        None if peer == (Peer::Unix { uid: Some(0) }) => Ok(Principal::Root),
        secret => authz.authenticate(secret.as_deref()),
    }
}

/// The route's resource with its `{params}` filled from the request path.
pub fn resource(route: &Route, params: &RawPathParams) -> String {
    params.iter().fold(route.resource.to_owned(), |r, (k, v)| {
        r.replace(&format!("{{{k}}}"), v)
    })
}

/// What a request whose path parameters do not decode (`%FF`: not UTF-8)
/// is answered, once its sender is known.
pub const UNDECODABLE_PATH: &str = "a path parameter is not valid UTF-8 once percent-decoded";

/// The middleware in front of every route: 401 without a known principal,
/// 400 if a path parameter does not decode (so that an anonymous caller
/// learns nothing from the path but the 401), 403 unless its policies
/// allow the route's action on the resource.
pub async fn check(
    State((state, route)): State<(ApiState, &'static Route)>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    req: Request,
    next: Next,
) -> Response {
    let resource = match &params {
        Ok(params) => resource(route, params),
        Err(_) => route.resource.to_owned(),
    };
    // Clone the Arc out so the lock is not held across the handler.
    let authz = state.authz.read().clone();
    let page = route.is_page();
    let who = if page { page_principal } else { principal };
    let principal = match who(peer, req.headers(), &authz) {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(?peer, action = %route.action, %resource, "API request refused: {e}");
            let mut response = ApiError::from(e.refusal()).into_response();
            if page {
                // Browsers ask for a user name and password only when a
                // 401 offers Basic; the token is the password.
                response
                    .headers_mut()
                    .append(WWW_AUTHENTICATE, HeaderValue::from_static(BASIC_CHALLENGE));
            }
            return response;
        }
    };
    if params.is_err() {
        tracing::info!(%principal, action = %route.action, %resource, "API request refused: {UNDECODABLE_PATH}");
        return ApiError::bad_request(UNDECODABLE_PATH).into_response();
    }
    let decision = authz.authorize(&principal, route.action, &resource);
    if let Some(refusal) = decision.refusal(&principal, route.action, &resource) {
        tracing::info!(%principal, action = %route.action, %resource, ?decision, "API request denied");
        return ApiError::from(refusal).into_response();
    }
    let write = route.method != http::Method::GET;
    // Handlers that check more than the route's action (the status page)
    // need to know who asks.
    let mut req = req;
    req.extensions_mut().insert(principal.clone());
    let response = next.run(req).await;
    if write {
        // Changes are logged with who made them.
        tracing::info!(
            %principal, action = %route.action, %resource,
            status = response.status().as_u16(), "API change"
        );
    }
    response
}
