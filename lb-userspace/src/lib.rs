//! The `lb` daemon's library.
//!
//! - [`config`]: the TOML config, load -> parse -> validate.
//! - [`maglev`]: weighted Maglev tables, identical on every host.
//! - [`state`]: the daemon's view of the maps and the reconciler that applies
//!   a config to them through the [`state::DataPlane`] trait (the map
//!   protocol is documented there).
//! - [`net`]: `std::net` <-> map encoding of addresses and ports.
//! - [`http`]: `http`/`https` listeners (ALB rules, proxying, keep-alive
//!   pools toward targets).
//! - [`routable`]: which targets take new work, from the control plane to
//!   every data path.
//! - [`listeners`]: the supervisor of the daemon's own listeners: what
//!   runs, what each serves, apply on reload.
//! - [`l4`]: the TCP proxy (tcp, tls) and the UDP relay (udp) those
//!   listeners run where XDP does not.
//! - [`round_robin`]: the weighted rotation every userspace path picks by.
//! - [`iam`]: the actions and resources IAM-style policies name.
//! - [`pem`]: certificate, key and CA files.
//! - [`wildcard`]: `*`/`?` patterns of IAM policies and ALB rules.
//! - [`tls`]: rustls server and client configs from the config's PEM files.
//! - [`workers`]: the threads, one event loop each, that serve userspace
//!   connections.
//! - [`clock`]: the coarse monotonic clock of the data path and the timeouts.
//! - [`conn_cap`]: the connection caps of the daemon's own listeners.
//! - [`fd_limit`]: the open-file limit those caps need.
//! - [`cli`]: the subcommands behind the `lb` binary.
//! - [`manual`]: its man pages and shell completions, from the same
//!   definitions.
//! - [`api`]: the management API (server, access control, client, its `lb`
//!   subcommands).
//! - [`metrics`]: the Prometheus registry and `/metrics` text.
//! - [`admin_http`]: HTTP/1.1 serving of those two, bounded (connection
//!   cap, head and write timeouts).
//! - [`sd_notify`]: readiness and reload notifications to systemd.
//! - [`health`]: health checks (TCP, HTTP, HTTPS probes) and their verdicts.
//!
//! - [`bpf`]: loading, attaching and pinning the XDP program, and
//!   `DataPlane` over its maps (`bpf::kernel_maps`).
//! - [`error_chain`]: an error and its sources on one line.
//! - [`daemon`]: `lb run` / `down` / `stats` around those.
//! - [`instance`]: one `lb run` per pin directory.
//! - [`target`]: `lb target`, what a host needs to be a target of
//!   balancers in dsr mode (the decapsulation program, VIPs on `lo`,
//!   sysctls).
//! - [`announce`]: the VIP routes BIRD announces over BGP, and the host's
//!   drain state.
//! - `fuzzing` (hidden, feature `fuzzing` or tests): the fuzz targets'
//!   bodies (`fuzz/`), not an API.
pub mod admin_http;
pub mod announce;
pub mod api;
pub mod bpf;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn_cap;
pub mod control;
pub mod daemon;
pub mod error_chain;
pub mod fd_limit;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod http;
pub mod iam;
pub mod instance;
pub mod l4;
pub mod latest;
pub mod listeners;
pub mod maglev;
pub mod manual;
pub mod metrics;
pub mod net;
pub mod pem;
pub mod probe_path;
pub mod round_robin;
pub mod routable;
pub mod sd_notify;
pub mod state;
pub mod stop;
pub mod target;
pub mod tls;
pub mod wildcard;
pub mod workers;
