//! `lb target attach` and `detach`, step by step. Each step looks before it
//! changes anything, so a second attach with the same arguments changes
//! nothing, and detach after a half-done attach undoes what was done.
use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
};

use lb_common::decap::{DecapSaved, MAX_ADDRS, SAVED_MAGIC, SYSCTL_ABSENT, vip_origin};

use super::{
    TargetError, addrs,
    program::{self, Attached, Decap},
    saved, sysctl,
};
use crate::bpf::loader::AttachMode;

/// What `lb target attach` was asked for.
#[derive(Clone, Debug)]
pub struct AttachSpec {
    pub interface: String,
    pub vips: Vec<IpAddr>,
    pub pin_dir: PathBuf,
    pub mode: AttachMode,
}

/// Checks an interface name the way the kernel does (`dev_valid_name`),
/// before it goes into a sysctl path, then that the interface exists.
pub fn check_interface(name: &str) -> Result<(), TargetError> {
    let valid = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0');
    if !valid {
        return Err(TargetError::BadInterface(name.to_owned()));
    }
    let c = std::ffi::CString::new(name).map_err(|_| TargetError::BadInterface(name.to_owned()))?;
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    if unsafe { libc::if_nametoindex(c.as_ptr()) } == 0 {
        return Err(TargetError::NoInterface(name.to_owned()));
    }
    Ok(())
}

/// The VIPs, each once, or why they cannot be served here.
fn check_vips(vips: &[IpAddr]) -> Result<BTreeSet<IpAddr>, TargetError> {
    if vips.is_empty() {
        return Err(TargetError::NoVips);
    }
    if let Some(bad) = vips
        .iter()
        .find(|ip| ip.is_unspecified() || ip.is_multicast() || ip.is_loopback())
    {
        return Err(TargetError::BadVip(*bad));
    }
    let set: BTreeSet<IpAddr> = vips.iter().copied().collect();
    if set.len() > MAX_ADDRS as usize {
        return Err(TargetError::TooManyVips {
            given: set.len(),
            max: MAX_ADDRS,
        });
    }
    Ok(set)
}

/// Sets everything up; returns one line per change (none: it was all
/// there already).
pub fn attach(spec: &AttachSpec) -> Result<Vec<String>, TargetError> {
    check_interface(&spec.interface)?;
    let vips = check_vips(&spec.vips)?;
    let mut d = Decap::open(&spec.pin_dir)?;
    let mut done = Vec::new();
    save_once(&mut d, spec)?;
    for s in sysctl::settings(&spec.interface) {
        let now = sysctl::current(&s)?;
        if now != SYSCTL_ABSENT && now != s.wanted {
            sysctl::apply(&s)?;
            done.push(format!("set {} = {}", s.name(), s.wanted));
        }
    }
    put_vips(&mut d, &vips, &mut done)?;
    // The host's own addresses, the VIPs excepted: an outer header to a
    // VIP is not a tunnel to this host. Taken now; attaching again takes
    // them again (after an address change).
    let local: Vec<IpAddr> = addrs::host_addrs()?
        .into_iter()
        .map(|a| a.addr)
        .filter(|ip| !vips.contains(ip))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if d.local()? != local {
        d.set_local(&local)?;
        done.push(format!("{} local addresses known", local.len()));
    }
    match d.attach(&spec.interface, spec.mode)? {
        Attached::New => done.push(format!(
            "attached {} to {} (pinned in {})",
            lb_common::decap::PROGRAM,
            spec.interface,
            spec.pin_dir.display()
        )),
        Attached::Replaced => done.push(format!(
            "replaced the program attached to {} with this version's {}",
            spec.interface,
            lb_common::decap::PROGRAM
        )),
        Attached::Already => {}
    }
    Ok(done)
}

/// Saves the sysctls as they are before the first attach changes them; a
/// later attach keeps what was saved (or refuses another interface).
fn save_once(d: &mut Decap, spec: &AttachSpec) -> Result<(), TargetError> {
    let saved = d.saved()?;
    if saved.magic == SAVED_MAGIC {
        let attached = saved::interface(&saved);
        if attached != spec.interface {
            return Err(TargetError::AttachedElsewhere {
                attached,
                pin_dir: spec.pin_dir.clone(),
            });
        }
        return Ok(());
    }
    let mut sysctls = [0i32; lb_common::decap::SAVED_SYSCTLS];
    for (slot, s) in sysctls.iter_mut().zip(sysctl::settings(&spec.interface)) {
        *slot = sysctl::current(&s)?;
    }
    d.set_saved(DecapSaved {
        magic: SAVED_MAGIC,
        interface: saved::interface_bytes(&spec.interface),
        sysctls,
    })
}

/// Puts the VIPs on `lo` and in `DECAP_VIPS`, and takes away those of an
/// earlier attach no longer asked for.
fn put_vips(
    d: &mut Decap,
    vips: &BTreeSet<IpAddr>,
    done: &mut Vec<String>,
) -> Result<(), TargetError> {
    let host = addrs::host_addrs()?;
    let current = d.vips()?;
    for vip in vips {
        let known = current.iter().find(|(ip, _)| ip == vip).map(|(_, o)| *o);
        let on_lo = addrs::on_lo(&host, *vip);
        let origin = match (known, on_lo) {
            (Some(origin), true) => origin,
            (Some(_) | None, false) => {
                addrs::add_to_lo(*vip)?;
                done.push(format!("added {vip} to lo"));
                vip_origin::ADDED
            }
            (None, true) => vip_origin::FOUND,
        };
        if known != Some(origin) {
            d.set_vip(*vip, origin)?;
            if known.is_none() {
                done.push(format!("decapsulating for {vip}"));
            }
        }
    }
    for (vip, origin) in current.iter().filter(|(ip, _)| !vips.contains(ip)) {
        d.remove_vip(*vip)?;
        done.push(format!("no longer decapsulating for {vip}"));
        if *origin == vip_origin::ADDED && addrs::on_lo(&host, *vip) {
            addrs::del_from_lo(*vip)?;
            done.push(format!("removed {vip} from lo"));
        }
    }
    Ok(())
}

/// Undoes `attach`: the program off the interface first, then the VIPs it
/// put on `lo`, the sysctls as they were, the pins. Nothing pinned is not
/// an error (returns no lines).
pub fn detach(pin_dir: &Path) -> Result<Vec<String>, TargetError> {
    if !program::anything_pinned(pin_dir) {
        return Ok(Vec::new());
    }
    let mut done = program::unpin_links(pin_dir)?;
    let mut d = Decap::open(pin_dir)?;
    let host = addrs::host_addrs()?;
    for (vip, origin) in d.vips()? {
        if origin == vip_origin::ADDED && addrs::on_lo(&host, vip) {
            addrs::del_from_lo(vip)?;
            done.push(format!("removed {vip} from lo"));
        }
    }
    let saved = d.saved()?;
    if saved.magic == SAVED_MAGIC {
        let interface = saved::interface(&saved);
        for (s, old) in sysctl::settings(&interface).iter().zip(saved.sysctls) {
            // The interface may be gone since; its settings went with it.
            if old != SYSCTL_ABSENT && s.path.exists() && sysctl::read(&s.path)? != old {
                sysctl::set(&s.path, old)?;
                done.push(format!("restored {} = {old}", s.name()));
            }
        }
    }
    drop(d);
    program::unpin_rest(pin_dir)?;
    done.push(format!("removed the pins in {}", pin_dir.display()));
    Ok(done)
}
