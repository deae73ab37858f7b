//! A short soak: `lb-soak`, what `cargo xtask soak` runs for minutes, for
//! 30 s with a few reloads, one target cycle and one daemon restart, so
//! that the soak itself cannot rot. Every exchange must succeed.
use std::process::Command;

use lb_tests::{netns, proc};
use serde_json::Value;

#[test]
fn a_short_soak_loses_nothing() {
    netns::require_root();
    let bin = proc::test_bin("lb-soak");
    let args = [
        "--seconds",
        "30",
        "--reloads",
        "6",
        "--restarts",
        "1",
        "--warmup",
        "3",
        "--cycle-gap",
        "2",
        "--tcp",
        "2",
        "--udp",
        "2",
        "--http1",
        "2",
        "--http2",
        "1",
        "--websocket",
        "1",
    ];
    let out = Command::new(&bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("{stdout}\n--- stderr ---\n{stderr}");
    assert!(
        out.status.success(),
        "lb-soak failed ({}):\n{all}",
        out.status
    );
    let result: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("soak-result: "))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| panic!("no soak-result line:\n{all}"));
    assert_eq!(result["failed"], 0, "{all}");
    assert_eq!(result["conductor_errors"], 0, "{all}");
    assert_eq!(result["reloads"], 6, "{all}");
    assert_eq!(result["restarts"], 1, "{all}");
    assert!(result["target_cycles"].as_u64() >= Some(1), "{all}");
    assert_eq!(result["usage_within_limits"], true, "{all}");
    for kind in ["tcp", "udp", "http1", "http2", "websocket"] {
        assert!(
            result["kinds"][kind]["ok"].as_u64() > Some(0),
            "no {kind} exchange:\n{all}"
        );
    }
}
