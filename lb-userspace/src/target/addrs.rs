//! The host's addresses and the VIPs on `lo`, through iproute2's `ip` (the
//! tool every Linux host has; its JSON output is stable).
use std::{net::IpAddr, process::Command};

use serde::Deserialize;

use super::TargetError;

/// One interface of `ip -json addr show`, with the fields used here.
#[derive(Deserialize)]
struct Link {
    ifname: String,
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
}

#[derive(Deserialize)]
struct AddrInfo {
    local: Option<IpAddr>,
}

/// An address and the interface it is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostAddr {
    pub interface: String,
    pub addr: IpAddr,
}

fn ip(args: &[&str]) -> Result<Vec<u8>, TargetError> {
    let joined = args.join(" ");
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| TargetError::IpSpawn {
            args: joined.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(TargetError::Ip {
            args: joined,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out.stdout)
}

/// Every address of every interface.
pub fn host_addrs() -> Result<Vec<HostAddr>, TargetError> {
    let links: Vec<Link> = serde_json::from_slice(&ip(&["-json", "addr", "show"])?)?;
    Ok(links
        .into_iter()
        .flat_map(|l| {
            let interface = l.ifname;
            l.addr_info
                .into_iter()
                .filter_map(|a| a.local)
                .map(move |addr| HostAddr {
                    interface: interface.clone(),
                    addr,
                })
        })
        .collect())
}

/// Whether `addr` is on `lo` in `addrs`.
pub fn on_lo(addrs: &[HostAddr], addr: IpAddr) -> bool {
    addrs.iter().any(|a| a.interface == "lo" && a.addr == addr)
}

fn host_prefix(addr: IpAddr) -> String {
    let len = if addr.is_ipv4() { 32 } else { 128 };
    format!("{addr}/{len}")
}

/// Puts `addr` on `lo` as a host address (/32, /128).
pub fn add_to_lo(addr: IpAddr) -> Result<(), TargetError> {
    ip(&["addr", "add", &host_prefix(addr), "dev", "lo"]).map(drop)
}

/// Takes `addr` off `lo`.
pub fn del_from_lo(addr: IpAddr) -> Result<(), TargetError> {
    ip(&["addr", "del", &host_prefix(addr), "dev", "lo"]).map(drop)
}
