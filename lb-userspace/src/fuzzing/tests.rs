//! Every fuzz target over its seed corpus (`fuzz/seeds/<target>/`), so
//! that the targets build and hold on the inputs they start from without
//! nightly, and the crashes the fuzzers found, each as a test of its own.
use std::{fs, path::PathBuf};

use super::*;
use crate::config::Config;

/// A fuzz target's body.
type Target = fn(&[u8]);

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let mut out: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.expect("a directory entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&path).expect("a seed"))
        })
        .collect();
    out.sort();
    assert!(out.len() >= 4, "{}: too few seeds", dir.display());
    out
}

#[test]
fn every_target_holds_on_its_seeds() {
    let targets: [(&str, Target); 4] = [
        ("config", config),
        ("upstream_response", upstream_response),
        ("proxy_v2_round_trip", proxy_v2_round_trip),
        ("health_response", health_response),
    ];
    for (target, run) in targets {
        for (name, data) in seeds(target) {
            eprintln!("{target}: {name}");
            run(&data);
        }
    }
}

/// The config seeds reach past validation (where the target does most),
/// but for the one written to fail it.
#[test]
fn the_config_seeds_are_valid_but_the_bad_one() {
    for (name, data) in seeds("config") {
        let text = String::from_utf8(data).expect("UTF-8");
        let valid = Config::parse(&text).is_ok_and(|c| c.validate().is_ok());
        assert_eq!(valid, name != "bad.toml", "{name}");
    }
}

#[test]
fn the_proxy_v2_decoder_reads_what_the_spec_shows() {
    // haproxy's proxy-protocol.txt, section 2.2: TCP over IPv4.
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    h.extend_from_slice(&[192, 0, 2, 1, 198, 51, 100, 7, 0x1f, 0x90, 0x01, 0xbb]);
    let d = proxy_v2::decode(&h).unwrap();
    assert_eq!(d.source, "192.0.2.1:8080".parse().unwrap());
    assert_eq!(d.destination, "198.51.100.7:443".parse().unwrap());
    // LOCAL command, a length that lies, a trailing byte: refused.
    let mut local = h.clone();
    local[12] = 0x20;
    let mut short = h.clone();
    short[15] = 0x0d;
    let mut long = h.clone();
    long.push(0);
    for bad in [local, short, long, h[..20].to_vec()] {
        assert!(proxy_v2::decode(&bad).is_err(), "{bad:02x?}");
    }
}

/// The fuzzers' first finds, both in the targets themselves (each on a
/// seed): the bytes after a body were compared as far as they had been
/// read, which depends on the pieces; and a target that speaks first (an
/// SSH banner) fails the probe before it writes its request, which is a
/// right verdict, not a broken probe.
#[test]
fn crash_upstream_bytes_after_a_204_are_where_the_body_ended() {
    let mut data = vec![0x02];
    data.extend_from_slice(b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc");
    upstream_response(&data);
}

#[test]
fn crash_health_a_target_that_speaks_first_fails_the_probe() {
    let mut data = vec![0xff];
    data.extend_from_slice(b"SSH-2.0-OpenSSH_9.2\r\n");
    health_response(&data);
}

/// Found by the fuzzer in the proxy itself: a head whose unfinished last
/// line is already malformed, then the end of the stream, was a bad head
/// when the line's bytes came in one segment with the line before and a
/// lost connection when they came alone. Now bad either way.
#[test]
fn crash_upstream_a_malformed_line_cut_short_is_a_bad_head_in_any_pieces() {
    let mut data = vec![0x02];
    data.extend_from_slice(b"HTTP/1.1 204 No Content\r\nCon\x7fHTTP/te1");
    upstream_response(&data);
}
