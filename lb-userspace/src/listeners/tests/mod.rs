//! The supervisor with real sockets on loopback: L4 listeners (the TCP
//! proxy with TLS both ways, [`tcp`]) and the UDP relay ([`udp`]) started,
//! updated and stopped through [`super::Listeners`], and the counters the
//! namespace tests cannot see well.
mod tcp;
mod udp;
