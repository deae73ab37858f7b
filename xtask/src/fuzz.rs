//! `cargo xtask fuzz`: each cargo-fuzz target of `fuzz/` for a bounded
//! time, starting from its seeds (`fuzz/seeds/<target>`); the corpus it
//! grows stays in `target/fuzz/corpus/<target>` and a crash is written to
//! `target/fuzz/artifacts/<target>/`. Prints, per target, the time run,
//! the executions and the crashes, and fails on any crash.
use std::{fs, path::PathBuf, time::Instant};

use anyhow::{Context, Result, bail};

use crate::{cmd::Cmd, project, setup};

/// The targets (`fuzz/fuzz_targets/<name>.rs`) and their dictionaries.
pub const TARGETS: [(&str, Option<&str>); 4] = [
    ("config", Some("config.dict")),
    ("upstream_response", Some("http.dict")),
    ("proxy_v2_round_trip", None),
    ("health_response", Some("http.dict")),
];

/// What one target's run came to.
struct Run {
    target: &'static str,
    seconds: f64,
    executions: Option<u64>,
    corpus: usize,
    crash: Option<String>,
}

pub fn fuzz(seconds: u64, only: &[String]) -> Result<()> {
    setup::cargo_fuzz()?;
    for name in only {
        if !TARGETS.iter().any(|(t, _)| t == name) {
            let all: Vec<_> = TARGETS.iter().map(|(t, _)| *t).collect();
            bail!("no fuzz target {name:?}; there are {}", all.join(", "));
        }
    }
    let chosen: Vec<_> = TARGETS
        .into_iter()
        .filter(|(t, _)| only.is_empty() || only.iter().any(|o| o == t))
        .collect();
    // Built first, all at once, so that each run's time is fuzzing only.
    Cmd::new("cargo")
        .args(["+nightly", "fuzz", "build"])
        .dir(project::root())
        .run()
        .context("building the fuzz targets")?;
    let mut runs = Vec::new();
    for (target, dict) in chosen {
        runs.push(run(target, dict, seconds)?);
    }
    let report = report(&runs);
    println!("{report}");
    let summary = project::target_dir().join("fuzz/summary.txt");
    fs::write(&summary, &report).with_context(|| format!("writing {}", summary.display()))?;
    let crashed: Vec<_> = runs.iter().filter_map(|r| r.crash.as_deref()).collect();
    if !crashed.is_empty() {
        bail!(
            "the fuzzers found crashes: {}\n(make each a unit test in lb-userspace, fix it, \
             and rerun; `cargo +nightly fuzz run <target> <file>` replays one)",
            crashed.join(", ")
        );
    }
    Ok(())
}

fn run(target: &'static str, dict: Option<&str>, seconds: u64) -> Result<Run> {
    let root = project::root();
    let out = project::target_dir().join("fuzz");
    let corpus = out.join("corpus").join(target);
    let artifacts = out.join("artifacts").join(target);
    for dir in [&corpus, &artifacts] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let seeds = root.join("fuzz/seeds").join(target);
    let mut cmd = Cmd::new("cargo")
        .args(["+nightly", "fuzz", "run", target])
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        // A hang is a finding too; every input here is read in microseconds.
        .arg("-timeout=10")
        .arg("-print_final_stats=1")
        .dir(root);
    if let Some(dict) = dict {
        cmd = cmd.arg(format!(
            "-dict={}",
            root.join("fuzz/dict").join(dict).display()
        ));
    }
    let start = Instant::now();
    let mut executions = None;
    let mut crash = None;
    let ok = cmd.run_watching_stderr(|line| {
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            executions = n.trim().parse().ok();
        }
        if let Some(at) = line.find("Test unit written to ") {
            crash = Some(line[at + "Test unit written to ".len()..].trim().to_owned());
        }
    })?;
    if !ok && crash.is_none() {
        crash = Some(format!("{target} (exited with an error; see above)"));
    }
    Ok(Run {
        target,
        seconds: start.elapsed().as_secs_f64(),
        executions,
        corpus: count_files(&corpus),
        crash,
    })
}

fn count_files(dir: &PathBuf) -> usize {
    fs::read_dir(dir).map_or(0, |d| d.count())
}

fn report(runs: &[Run]) -> String {
    let mut out = format!(
        "{:<22} {:>10} {:>14} {:>10} {:>8}  crash\n",
        "target", "seconds", "executions", "exec/s", "corpus"
    );
    for r in runs {
        let execs = r.executions.map_or("?".into(), |n| n.to_string());
        let rate = r
            .executions
            .map_or("?".into(), |n| format!("{:.0}", n as f64 / r.seconds));
        out.push_str(&format!(
            "{:<22} {:>10.0} {:>14} {:>10} {:>8}  {}\n",
            r.target,
            r.seconds,
            execs,
            rate,
            r.corpus,
            r.crash.as_deref().unwrap_or("none")
        ));
    }
    out
}
