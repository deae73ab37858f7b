//! Embeds the eBPF objects built by `cargo xtask build` into the `lb` binary:
//! the balancer (`lb-ebpf`) and, beside it, the target-side decapsulation
//! program (`lb-decap`) and the dsr health probes' encapsulation
//! (`lb-probe`).
//!
//! The balancer's object comes from `LB_EBPF_OBJECT` or the default nightly
//! build path; `lb-decap` is its sibling. When they do not exist (plain
//! `cargo build`, clippy), empty objects are embedded and `lb run` / `lb
//! target attach` fail with a message that says to use the xtask: host-only
//! tooling keeps working without the BPF toolchain.
use std::{
    env, fs,
    path::{Path, PathBuf},
};

fn embed(src: &Path, out: &Path) {
    println!("cargo:rerun-if-changed={}", src.display());
    let bytes = fs::read(src).unwrap_or_default();
    fs::write(out, bytes).unwrap_or_else(|e| panic!("write {}: {e}", out.display()));
}

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let default = manifest.join("../target/bpfel-unknown-none/release/lb-ebpf");
    let src = env::var_os("LB_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or(default);
    println!("cargo:rerun-if-env-changed=LB_EBPF_OBJECT");
    embed(&src, &out.join("lb-ebpf.o"));
    embed(&src.with_file_name("lb-decap"), &out.join("lb-decap.o"));
    embed(&src.with_file_name("lb-probe"), &out.join("lb-probe.o"));
}
