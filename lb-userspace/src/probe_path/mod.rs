//! The way health probes of dsr targets take through the encapsulation
//! (`health_check.address = "vip"`): a probe socket to the VIP carries the
//! target's mark (`SO_MARK`); a policy rule (`fwmark MARK_BASE/MARK_MASK
//! lookup TABLE`, both families) routes it into the probe device
//! [`DEVICE`], an IFB whose egress runs `lb_probe_encap`: the program wraps
//! the probe for the target the mark names, as the XDP program wraps a
//! client's packet, and sends it out of the interface toward the target.
//! The target answers from the VIP straight to this host's address, like it
//! answers clients: no reply passes the probe device.
//!
//! Set up when the first such check starts (`lb run`, a reload) and left
//! in place across reloads and restarts (each step looks first); the
//! program's TCX link is the daemon's and goes with it; `lb down` removes
//! the rules and the device ([`tear_down`]). After the jobs are prepared
//! (start, reload, API change) and the VIPs announced, and whenever an
//! announcement adds routes, a task asks the kernel whether each target's
//! probes can leave and their answers come in, and warns when not
//! ([`answers`]): a task of its own, since a few route lookups per target
//! would hold the control loop for a second at ten thousand targets; a
//! newer one replaces it, so changes in a row do not pile up.
mod answers;
mod marks;
mod netlink;
mod program;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::PathBuf,
};

use tokio::task::AbortHandle;
use tracing::{error, info, warn};

use crate::{
    error_chain::ErrorChain,
    health::{ProbeJob, Route},
};
use marks::Marks;
use program::Program;

/// The probe device (an IFB: see the module docs).
pub const DEVICE: &str = "lb-probe";
/// Its MTU: probes are small (a SYN, a `GET`, a TLS hello), and a
/// probe wrapped in up to 40 more bytes must still fit a 1500-byte (or any
/// >= 1320-byte) link toward the targets.
pub const DEVICE_MTU: u32 = 1280;
/// The routing table of the probe rule (`0x4c48`, "LH").
pub const TABLE: u32 = 0x4c48;
/// The probe rule's priority: before the main table's (32766).
pub const RULE_PRIORITY: u32 = 0x4c48;

#[derive(Debug, thiserror::Error)]
pub enum ProbePathError {
    #[error(
        "the probe encapsulation program was not built into this binary (build with `cargo xtask build`)"
    )]
    NoObject,
    #[error("loading the probe encapsulation program: {0}")]
    Load(String),
    #[error("attaching the probe encapsulation program to {device}: {reason}")]
    Attach { device: String, reason: String },
    #[error("the probe target map: {0}")]
    Map(String),
    #[error("{what}: {reason}")]
    Netlink { what: &'static str, reason: String },
    #[error("writing {path}: {reason}")]
    Sysctl { path: String, reason: String },
    #[error("opening a netlink socket: {0}")]
    Socket(std::io::Error),
}

/// The probe path while it runs, and the marks of the targets it serves.
pub struct Probes {
    program: Option<Program>,
    marks: Marks,
    /// Where the program's counters are pinned (`daemon.pin_dir`).
    pin_dir: PathBuf,
    /// (VIP, target address, mark) of each job probing through a VIP, as
    /// the last [`Probes::prepare`] left them.
    probed: Probed,
    /// Whether `probed` changed since the last check of their routes.
    unchecked: bool,
    /// The running check of the probes' routes, if any.
    check: Option<AbortHandle>,
}

impl Probes {
    /// A path that is not set up yet (set up by the first [`Probes::prepare`]
    /// that needs it), its counters to be pinned in `pin_dir`.
    pub fn new(pin_dir: PathBuf) -> Self {
        Self {
            program: None,
            marks: Marks::default(),
            pin_dir,
            probed: BTreeSet::new(),
            unchecked: false,
            check: None,
        }
    }

    /// Sets the path up when `jobs` need it and it is not (a failure is
    /// logged: those probes then fail, their targets turn unhealthy, and
    /// the next reload tries again), then gives each encapsulated job its
    /// target's mark.
    pub async fn prepare(&mut self, jobs: &mut [ProbeJob]) {
        let needed = jobs
            .iter()
            .any(|j| matches!(j.route, Route::Encapsulated { .. }));
        if needed && self.program.is_none() {
            match start(&self.pin_dir).await {
                Ok(program) => {
                    info!(device = DEVICE, table = TABLE, "dsr probe path set up");
                    self.program = Some(program);
                    self.marks = Marks::default();
                }
                Err(e) => error!(
                    error = %ErrorChain(&e),
                    "setting up the dsr probe path failed: probes through VIPs fail"
                ),
            }
        }
        self.assign(jobs);
        self.probed = encapsulated(jobs);
        self.unchecked = true;
    }

    /// Has the probes' routes checked ([`answers`]) if the jobs changed
    /// since the last check or `routes_added` (the caller just announced
    /// VIPs: their blackholes are what a rule may send the probes into),
    /// replacing a check still running. Called after the announcement
    /// that follows every [`Probes::prepare`], so a check sees the routes
    /// of the config it checks.
    pub fn check_routes(&mut self, routes_added: bool) {
        if !(self.unchecked || routes_added) {
            return;
        }
        self.unchecked = false;
        if let Some(check) = self.check.take() {
            check.abort();
        }
        if self.program.is_some() && !self.probed.is_empty() {
            let probed = self.probed.clone();
            self.check = Some(tokio::spawn(warn_of_trouble(probed)).abort_handle());
        }
    }

    /// Marks for the encapsulated jobs' targets, written to the program's
    /// map (new names before the jobs use them, removed ones after nothing
    /// does any more).
    fn assign(&mut self, jobs: &mut [ProbeJob]) {
        let Some(program) = &mut self.program else {
            return;
        };
        let targets = jobs.iter().filter_map(|j| match j.route {
            Route::Encapsulated { .. } => Some(j.endpoint.ip()),
            Route::Direct => None,
        });
        let changes = self.marks.update(targets);
        let written = changes
            .added
            .iter()
            .try_for_each(|(mark, ip)| program.insert(*mark, *ip))
            .and_then(|()| changes.removed.iter().try_for_each(|m| program.remove(*m)));
        if let Err(e) = written {
            error!(error = %ErrorChain(&e), "updating the dsr probe targets failed");
        }
        for job in jobs.iter_mut() {
            if let Route::Encapsulated { mark, .. } = &mut job.route {
                *mark = self.marks.of(job.endpoint.ip());
            }
        }
    }
}

/// (VIP, target address, mark) of each job probing through a VIP.
type Probed = BTreeSet<(IpAddr, IpAddr, u32)>;

/// What a line that warns of an [`answers::Trouble`] begins with.
pub const TROUBLE_WARNING: &str = "dsr health probes through a VIP cannot test their targets";
/// What the line that ends a check of the probes' routes says (after its
/// warnings).
pub const ROUTES_CHECKED: &str = "dsr probe routes checked";

/// The [`Probed`] of `jobs`.
fn encapsulated(jobs: &[ProbeJob]) -> Probed {
    jobs.iter()
        .filter_map(|j| match j.route {
            Route::Encapsulated {
                vip,
                mark: Some(mark),
            } => Some((vip, j.endpoint.ip(), mark)),
            _ => None,
        })
        .collect()
}

/// Asks the kernel about the probes of each of `probed` ([`answers`]) and
/// warns once per VIP and trouble, naming its targets, all at the end (an
/// abort leaves no half of them). Nothing else changes: the probes run,
/// and fail as they would.
async fn warn_of_trouble(probed: Probed) {
    let targets = probed.len();
    match troubles(probed).await {
        Ok(troubles) => {
            for ((vip, trouble), targets) in &troubles {
                let targets: Vec<String> = targets.iter().map(IpAddr::to_string).collect();
                warn!(
                    %vip,
                    targets = %targets.join(","),
                    "{TROUBLE_WARNING}: {trouble}"
                );
            }
            info!(targets, troubles = troubles.len(), "{ROUTES_CHECKED}");
        }
        Err(e) => warn!(error = %ErrorChain(&e), "could not ask the routes of the dsr probes"),
    }
}

/// The troubles of the probes of each (VIP, target, mark), by VIP and
/// trouble (its text), with the targets that have it.
async fn troubles(
    probed: Probed,
) -> Result<BTreeMap<(IpAddr, String), Vec<IpAddr>>, ProbePathError> {
    let handle = netlink().await?;
    let device = netlink::device_index(&handle)
        .await?
        .ok_or_else(|| ProbePathError::Netlink {
            what: "looking up the probe device",
            reason: "it is not there".into(),
        })?;
    let mut troubles: BTreeMap<(IpAddr, String), Vec<IpAddr>> = BTreeMap::new();
    for (vip, target, mark) in probed {
        let trouble = answers::trouble(&handle, device, target, vip, mark)
            .await
            .map_err(netlink::nl("asking the routes of a probe"))?;
        if let Some(t) = trouble {
            troubles
                .entry((vip, t.to_string()))
                .or_default()
                .push(target);
        }
    }
    Ok(troubles)
}

async fn netlink() -> Result<rtnetlink::Handle, ProbePathError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(ProbePathError::Socket)?;
    tokio::spawn(connection);
    Ok(handle)
}

async fn start(pin_dir: &std::path::Path) -> Result<Program, ProbePathError> {
    let handle = netlink().await?;
    netlink::set_up(&handle).await?;
    Program::attach(DEVICE, pin_dir)
}

/// `lb down`: removes the rules and the device; returns what it removed.
pub fn tear_down() -> Result<Vec<String>, ProbePathError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ProbePathError::Socket)?;
    runtime.block_on(async {
        let handle = netlink().await?;
        netlink::tear_down(&handle).await
    })
}
