//! Embeds the eBPF object built by `cargo xtask build` into the `lb` binary.
//!
//! The object comes from `LB_EBPF_OBJECT` or the default nightly build path.
//! When neither exists (plain `cargo build`, clippy), an empty object is
//! embedded and `lb run` fails with a message that says to use the xtask:
//! host-only tooling keeps working without the BPF toolchain.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let default = manifest.join("../target/bpfel-unknown-none/release/lb-ebpf");
    let src = env::var_os("LB_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or(default);
    println!("cargo:rerun-if-env-changed=LB_EBPF_OBJECT");
    println!("cargo:rerun-if-changed={}", src.display());
    let bytes = fs::read(&src).unwrap_or_default();
    fs::write(out.join("lb-ebpf.o"), bytes).expect("write OUT_DIR/lb-ebpf.o");
}
