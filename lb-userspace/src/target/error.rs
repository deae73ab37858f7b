//! What can go wrong in `lb target`.
use std::{io, net::IpAddr, path::PathBuf};

use crate::bpf::{bpffs::BpffsError, loader::LoadError};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no interface named {0:?} on this host")]
    NoInterface(String),
    #[error("{0:?} is not a valid interface name (1 to 15 bytes, no '/', ':' or whitespace)")]
    BadInterface(String),
    #[error("at least one --vip is required")]
    NoVips,
    #[error("{0} is not a VIP a target can serve (unspecified, multicast or loopback)")]
    BadVip(IpAddr),
    #[error("at most {max} VIPs per target, {given} given")]
    TooManyVips { given: usize, max: u32 },
    #[error(
        "this lb binary has no decapsulation object embedded: build it with `cargo xtask build`"
    )]
    NoObject,
    #[error(
        "already attached to {attached} (pins in {pin_dir}): run `lb target detach` first, or use another --pin-dir"
    )]
    AttachedElsewhere { attached: String, pin_dir: PathBuf },
    #[error(transparent)]
    Bpffs(#[from] BpffsError),
    #[error("loading the decapsulation program: {0}")]
    Load(#[from] aya::EbpfError),
    #[error(transparent)]
    Attach(#[from] LoadError),
    #[error("map {0} missing from the decapsulation object")]
    MissingMap(&'static str),
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        source: aya::maps::MapError,
    },
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("removing pin {path}: {source}")]
    Unpin { path: PathBuf, source: io::Error },
    #[error("sysctl {path}: {source}")]
    Sysctl { path: PathBuf, source: io::Error },
    #[error("sysctl {path}: {value:?} is not a number")]
    SysctlValue { path: PathBuf, value: String },
    #[error("running `ip {args}`: {source}")]
    IpSpawn { args: String, source: io::Error },
    #[error("`ip {args}` failed: {stderr}")]
    Ip { args: String, stderr: String },
    #[error("reading `ip -json addr`: {0}")]
    IpJson(#[from] serde_json::Error),
}
