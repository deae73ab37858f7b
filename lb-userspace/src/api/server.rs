//! Binding and running the API: the same router on the Unix socket and, if
//! configured, on a TCP address.
//!
//! Reload: the addresses are fixed for the life of an [`ApiServer`]. When a
//! reload changes them, the daemon retires the running server
//! ([`ApiServer::retire`]: it stops accepting at once, and its requests in
//! flight finish in the background, so the control loop does not wait for
//! them) and calls [`serve`] again (in that order: the old server closes
//! its listeners and removes its socket file on the way out). When only
//! tokens or policies change it calls [`ApiServer::set_authorizer`];
//! connections stay up and the next request is checked against the new
//! policies.
use std::{
    io,
    net::SocketAddr,
    os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures_util::future::join_all;
use hyper_util::server::graceful::GracefulShutdown;
use parking_lot::RwLock;
use tokio::{
    net::{TcpListener, UnixListener},
    sync::watch,
    task::JoinHandle,
};

use super::{access::Peer, auth::Authorizer, routes::router, table::ApiState};
use crate::{
    admin_http::{self, Capped, Limits, MAX_CONNECTIONS},
    control::ControlHandle,
};

/// Where the API listens when the config says nothing.
pub const DEFAULT_SOCKET: &str = crate::config::DEFAULT_API_SOCKET;
/// Owner and group may connect; the group is how non-root operators get
/// access to the socket (they still need a token).
const SOCKET_MODE: u32 = 0o660;
/// How long shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The addresses the API is served on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The Unix socket (`api.socket`).
    pub socket: PathBuf,
    /// An optional TCP address (`api.listen`); every TCP client needs a token.
    pub listen: Option<SocketAddr>,
    /// Whether `GET /status` serves the status page (`api.status_page`);
    /// else it is an unknown route (404).
    pub status_page: bool,
}

impl Default for Endpoints {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_SOCKET),
            listen: None,
            status_page: false,
        }
    }
}

/// `api.socket`, `api.listen` and `api.status_page`.
impl From<&crate::config::Api> for Endpoints {
    fn from(api: &crate::config::Api) -> Self {
        Self {
            socket: api.socket.clone(),
            listen: api.listen,
            status_page: api.status_page,
        }
    }
}

/// Why the API could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("failed to create the directory of the API socket {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("API socket {path} is in use by a running process")]
    SocketInUse { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("failed to remove the stale API socket {path}")]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to bind the API socket {path}")]
    BindUnix {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to set the mode of the API socket {path}")]
    Chmod {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to listen for the API on {addr}")]
    BindTcp {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// A running API. Dropping it stops accepting and removes the socket file;
/// [`ApiServer::shutdown`] also waits for in-flight requests.
pub struct ApiServer {
    endpoints: Endpoints,
    tcp_addr: Option<SocketAddr>,
    /// (device, inode) of the socket we bound, so we never remove a socket
    /// that a newer server has bound at the same path.
    socket_id: (u64, u64),
    authz: Arc<RwLock<Arc<Authorizer>>>,
    stop: watch::Sender<bool>,
    /// The accept loops; each ends with its listener closed and returns its
    /// connections' graceful shutdown.
    tasks: Vec<JoinHandle<GracefulShutdown>>,
}

/// Binds the Unix socket and the optional TCP address and serves the API on
/// both, answering through `control` and checking every request with
/// `authz`.
pub async fn serve(
    endpoints: &Endpoints,
    control: ControlHandle,
    authz: Arc<Authorizer>,
) -> Result<ApiServer, ServeError> {
    let unix = bind_unix(&endpoints.socket)?;
    let socket_id = std::fs::metadata(&endpoints.socket)
        .map(|m| (m.dev(), m.ino()))
        .unwrap_or_default();
    let tcp = match endpoints.listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::BindTcp { addr, source })?,
        ),
        None => None,
    };
    let tcp_addr = tcp.as_ref().and_then(|l| l.local_addr().ok());
    let authz = Arc::new(RwLock::new(authz));
    let app = router(
        ApiState {
            control,
            authz: authz.clone(),
        },
        endpoints.status_page,
    );
    let (stop, stopped) = watch::channel(false);
    let until = |mut rx: watch::Receiver<bool>| async move {
        // An error means the sender is gone: stop as well.
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let mut tasks = vec![tokio::spawn(admin_http::serve(
        Capped::new(unix, MAX_CONNECTIONS),
        app.clone(),
        |io, _| Peer::of_unix(io),
        Limits::default(),
        until(stopped.clone()),
    ))];
    if let Some(tcp) = tcp {
        tasks.push(tokio::spawn(admin_http::serve(
            Capped::new(tcp, MAX_CONNECTIONS),
            app,
            |_, addr| Peer::Tcp(*addr),
            Limits::default(),
            until(stopped),
        )));
    }
    tracing::info!(socket = %endpoints.socket.display(), tcp = ?tcp_addr, "management API listening");
    Ok(ApiServer {
        endpoints: endpoints.clone(),
        tcp_addr,
        socket_id,
        authz,
        stop,
        tasks,
    })
}

/// Binds the socket: parent directory created, a stale socket (no process
/// behind it) replaced, mode 0660.
fn bind_unix(path: &Path) -> Result<UnixListener, ServeError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| ServeError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ServeError::NotASocket {
                path: path.to_owned(),
            });
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServeError::SocketInUse {
                path: path.to_owned(),
            });
        }
        std::fs::remove_file(path).map_err(|source| ServeError::RemoveStale {
            path: path.to_owned(),
            source,
        })?;
    }
    let listener = UnixListener::bind(path).map_err(|source| ServeError::BindUnix {
        path: path.to_owned(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(
        |source| ServeError::Chmod {
            path: path.to_owned(),
            source,
        },
    )?;
    Ok(listener)
}

impl ApiServer {
    /// The addresses this server was started with.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The TCP address actually bound (useful with port 0).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Replaces the tokens and policies; the next request uses them.
    pub fn set_authorizer(&self, authz: Arc<Authorizer>) {
        *self.authz.write() = authz;
    }

    /// Stops accepting, lets in-flight requests finish (all of them
    /// within [`SHUTDOWN_GRACE`]), and removes the socket file: the daemon's
    /// exit.
    pub async fn shutdown(mut self) {
        drain(self.close().await).await;
    }

    /// Stops accepting and removes the socket file now (its addresses are
    /// free when this returns); requests in flight finish in the
    /// background, within [`SHUTDOWN_GRACE`]: a re-bind, which must not
    /// hold the control loop while a slow client reads its answer.
    pub async fn retire(mut self) {
        let open = self.close().await;
        tokio::spawn(drain(open));
    }

    /// Signals the accept loops and waits for them to close their
    /// listeners (at once: they stop at the signal); returns their open
    /// connections' graceful shutdowns.
    async fn close(&mut self) -> Vec<GracefulShutdown> {
        self.stop.send_replace(true);
        let mut open = Vec::new();
        for task in std::mem::take(&mut self.tasks) {
            match task.await {
                Ok(graceful) => open.push(graceful),
                Err(e) => tracing::warn!("management API task failed: {e}"),
            }
        }
        open
    }

    fn remove_socket(&self) {
        let path = &self.endpoints.socket;
        let ours =
            std::fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == self.socket_id);
        if !ours {
            return;
        }
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!("failed to remove the API socket {}: {e}", path.display());
        }
    }
}

/// Lets the connections of `open` finish their requests, all within
/// [`SHUTDOWN_GRACE`]; those still busy then are not waited for (a stalled
/// reader is cut by `admin_http`'s write timeout; a request waiting for
/// the control loop ends when the loop answers it, or with the process).
async fn drain(open: Vec<GracefulShutdown>) {
    let all = join_all(open.into_iter().map(GracefulShutdown::shutdown));
    if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
        tracing::debug!("management API requests still in flight after the grace period");
    }
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("endpoints", &self.endpoints)
            .field("tcp_addr", &self.tcp_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        self.remove_socket();
    }
}
