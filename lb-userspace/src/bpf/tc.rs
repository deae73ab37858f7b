//! The data path at tc (`lb_tc`), on the interfaces of
//! `daemon.tc_interfaces`: interfaces that carry packets of a local stack
//! (containers' veths, the host's own connections), whose checksum state
//! only a socket buffer knows (docs/datapath.md, "Clients on the balancer
//! host").
//!
//! Attached at ingress (packets arriving, e.g. from a container) and
//! egress (packets this host sends, e.g. a process connecting to a VIP)
//! through TCX links (Linux 6.6+: no qdisc to add or leave behind), pinned
//! as `tc_ingress_<interface>` and `tc_egress_<interface>` like the XDP
//! links: a new daemon swaps its program into them, `lb down` unpins them
//! (which detaches). The program shares every map with `lb_xdp` (one
//! object), so a flow is one flow whichever hook sees its packets.
use std::path::Path;

use aya::{
    Ebpf,
    programs::{
        ProgramError, SchedClassifier,
        tc::{SchedClassifierLink, TcAttachType},
    },
};
use lb_common::maps::TC_PROGRAM;
use tracing::info;

use super::{bpffs::Pins, loader::LoadError, pin};

/// The hooks the program runs at, with the prefix of their links' pins.
const HOOKS: [(TcAttachType, &str); 2] = [
    (TcAttachType::Ingress, "tc_ingress_"),
    (TcAttachType::Egress, "tc_egress_"),
];

/// Pin of the link of `interface` at `hook`.
fn link_pin(pins: &Pins, prefix: &str, interface: &str) -> std::path::PathBuf {
    pins.dir.join(format!("{prefix}{interface}"))
}

/// What removing the pin `pin_name` detaches, if it is one of our tc
/// links (for `lb down`'s report).
pub fn detached(pin_name: &str) -> Option<String> {
    HOOKS.iter().find_map(|(hook, prefix)| {
        let interface = pin_name.strip_prefix(prefix)?;
        Some(format!("detached {TC_PROGRAM} from {interface} ({hook:?})"))
    })
}

fn program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, LoadError> {
    let err = |source| LoadError::Program {
        name: TC_PROGRAM,
        source,
    };
    let prog = ebpf
        .program_mut(TC_PROGRAM)
        .ok_or(err(ProgramError::NotLoaded))?;
    prog.try_into().map_err(err)
}

/// Loads the tc program into the kernel (the verifier runs here).
pub fn load(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    program(ebpf)?.load().map_err(|source| LoadError::Program {
        name: TC_PROGRAM,
        source,
    })
}

/// Attaches the loaded program at ingress and egress of each interface,
/// into the pinned links where they exist, and pins the program.
pub fn attach(ebpf: &mut Ebpf, pins: &Pins, interfaces: &[String]) -> Result<(), LoadError> {
    let prog = program(ebpf)?;
    for interface in interfaces {
        for (hook, prefix) in HOOKS {
            let path = link_pin(pins, prefix, interface);
            if path.exists() {
                replace_in_link(prog, interface, &path)?;
            } else {
                attach_new(prog, interface, hook, &path)?;
            }
        }
    }
    pin::replace_program_pin(&pins.dir.join(TC_PROGRAM), |path| prog.pin(path))
}

fn attach_error(interface: &str) -> impl FnOnce(ProgramError) -> LoadError + '_ {
    move |source| LoadError::Attach {
        interface: interface.to_owned(),
        source,
    }
}

fn replace_in_link(
    prog: &mut SchedClassifier,
    interface: &str,
    path: &Path,
) -> Result<(), LoadError> {
    let link: SchedClassifierLink = pin::open_link(path)?;
    let id = prog.attach_to_link(link).map_err(attach_error(interface))?;
    // As for XDP links: the pin keeps the link, our handle only closes.
    drop(prog.take_link(id).map_err(attach_error(interface))?);
    info!(interface, "replaced program in existing tc link");
    Ok(())
}

fn attach_new(
    prog: &mut SchedClassifier,
    interface: &str,
    hook: TcAttachType,
    path: &Path,
) -> Result<(), LoadError> {
    // `attach` makes a TCX link on Linux 6.6+ (no clsact qdisc needed).
    let id = prog
        .attach(interface, hook)
        .map_err(attach_error(interface))?;
    let link = prog.take_link(id).map_err(attach_error(interface))?;
    pin::pin_link(link, path)?;
    info!(interface, ?hook, "attached tc program");
    Ok(())
}
