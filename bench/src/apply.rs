//! `cargo xtask bench control`, part one: how long the reconciler takes to
//! program the real kernel maps for a large config from scratch, and to apply
//! a one-target change to it.
//!
//! The config: `vips` TCP listeners, each with a target group of its own of
//! `targets` targets drawn from a pool of distinct endpoints (the data path
//! holds at most `MAX_TARGETS` distinct targets, so groups overlap), so every
//! VIP has a different Maglev table. Baseline in the same run: the time to
//! build those Maglev tables alone, without touching a map, and the time to
//! write them through the mmap alone.
use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use lb::{
    bpf::{
        kernel_maps::KernelMaps,
        loader::{self, AttachMode, LoadSpec},
    },
    config::Config,
    control::xdp::load_spec,
    maglev::{self, MaglevTarget},
    state::{DataPlane, Reconciler},
};

use lb_tests::netns::{self, Bpffs};

pub struct ApplyOpts {
    pub vips: u32,
    pub targets: u32,
    pub ring_size: u32,
}

pub struct ApplyReport {
    pub from_scratch: Duration,
    pub one_target: Duration,
    pub reapply_unchanged: Duration,
    pub maglev_build_only: Duration,
    pub ring_write_only: Duration,
    pub summary: String,
}

/// Distinct endpoints in the pool (below `MAX_TARGETS`).
const POOL: u32 = 10_000;

fn endpoint(i: u32) -> (IpAddr, u16) {
    let i = i % POOL;
    (
        IpAddr::V4(Ipv4Addr::new(
            10,
            200 + (i / 4000) as u8,
            ((i / 250) % 16) as u8,
            (i % 250) as u8 + 1,
        )),
        8000 + (i % 7) as u16,
    )
}

/// The TOML text of the big config.
pub fn config_text(o: &ApplyOpts, pin_dir: &std::path::Path) -> String {
    let mut s = format!(
        "[daemon]\ninterfaces = [\"lo\"]\npin_dir = \"{}\"\nmaglev_table_size = {}\nmax_vips = {}\n\n",
        pin_dir.display(),
        o.ring_size,
        o.vips
    );
    for v in 0..o.vips {
        let _ = write!(
            s,
            "[[listener]]\nname = \"l{v}\"\nprotocol = \"tcp\"\naddress = \"10.{}.{}.{}\"\nport = 80\ntarget_group = \"g{v}\"\n\n",
            100 + v / 65536,
            (v / 256) % 256,
            v % 256
        );
    }
    for v in 0..o.vips {
        let _ = write!(
            s,
            "[[target_group]]\nname = \"g{v}\"\nprotocol = \"tcp\"\nport = 8080\n"
        );
        for t in 0..o.targets {
            // A different stride per group: different member sets.
            let (ip, port) = endpoint(v * 13 + t * (v % 89 + 1));
            let _ = write!(
                s,
                "  [[target_group.target]]\n  address = \"{ip}\"\n  port = {port}\n"
            );
        }
        s.push('\n');
    }
    s
}

/// The daemon's load spec for `config`, attached nowhere.
fn spec(config: &Config) -> LoadSpec {
    LoadSpec {
        interfaces: vec![],
        tc_interfaces: vec![],
        mode: AttachMode::Generic,
        ..load_spec(config)
    }
}

pub fn run(o: &ApplyOpts) -> ApplyReport {
    netns::require_root();
    let fs = Bpffs::mount_fresh(format!("/tmp/lb-bench-apply-{}", netns::unique_id()));
    let pin_dir = fs.path().join("lb");
    let text = config_text(o, &pin_dir);
    let config = Config::parse(&text).expect("bench config parses");
    config.validate().expect("bench config is valid");
    let mut ebpf = loader::load(&spec(&config)).expect("load the XDP object");
    let mut maps = KernelMaps::new(&mut ebpf).expect("maps");

    // Baselines: the tables alone, then the writes alone.
    let t = Instant::now();
    let tables: Vec<Vec<u32>> = config
        .target_groups
        .iter()
        .map(|g| {
            let keys: Vec<String> = g
                .targets
                .iter()
                .map(|t| g.endpoint(t).to_string())
                .collect();
            let members: Vec<MaglevTarget<'_>> = keys
                .iter()
                .enumerate()
                .map(|(i, key)| MaglevTarget {
                    id: i as u32,
                    key,
                    weight: 1,
                })
                .collect();
            maglev::build(&members, o.ring_size).expect("maglev")
        })
        .collect();
    let maglev_build_only = t.elapsed();
    let t = Instant::now();
    for (i, table) in tables.iter().enumerate() {
        maps.write_ring(2 * i as u32 + 1, table)
            .expect("ring write");
    }
    let ring_write_only = t.elapsed();

    let mut state = Reconciler::new();
    let t = Instant::now();
    let changes = state.apply(&mut maps, &config).expect("apply from scratch");
    let from_scratch = t.elapsed();
    let mut summary = format!("from scratch: {changes}");

    let t = Instant::now();
    let again = state.apply(&mut maps, &config).expect("re-apply");
    let reapply_unchanged = t.elapsed();
    assert!(
        again.is_empty(),
        "re-applying the same config changed {again}"
    );

    let mut changed = config.clone();
    changed.target_groups[o.vips as usize / 2].targets[0].weight = 2;
    let t = Instant::now();
    let one = state.apply(&mut maps, &changed).expect("one-target change");
    let one_target = t.elapsed();
    let _ = write!(summary, "; one-target change: {one}");
    drop(maps);
    drop(ebpf);
    ApplyReport {
        from_scratch,
        one_target,
        reapply_unchanged,
        maglev_build_only,
        ring_write_only,
        summary,
    }
}
