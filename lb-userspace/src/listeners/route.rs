//! What a running listener serves, built from the config on every reload:
//! a byte relay (tcp, tls: [`L4Route`]), the layer-7 engine (http, https:
//! [`HttpListener`]) or a datagram relay (udp: [`UdpRoute`]).
use std::sync::Arc;

use crate::{
    http::HttpListener,
    l4::{L4Route, udp::UdpRoute},
};

#[derive(Clone)]
pub enum Route {
    L4(Arc<L4Route>),
    Http(Arc<HttpListener>),
    Udp(Arc<UdpRoute>),
}
