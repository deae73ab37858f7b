//! The kernel must allow forwarding on the attached interfaces: the data
//! path's `bpf_fib_lookup` refuses to route for an interface with
//! forwarding off, which would drop every VIP packet (`drop_no_route`).
//! Checked at start so the operator gets a clear error instead.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[error(
    "{sysctl} is {value:?}: with forwarding off the kernel's FIB refuses to route VIP traffic; enable it (`sysctl -w {sysctl}=1`)"
)]
pub struct ForwardingOff {
    pub sysctl: String,
    pub value: String,
}

fn read(path: &PathBuf) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("unreadable ({e})"))
}

/// Checks IPv4 forwarding on each interface (when there are IPv4 VIPs) and
/// IPv6 forwarding (when there are IPv6 VIPs).
pub fn check(interfaces: &[String], v4: bool, v6: bool) -> Result<(), ForwardingOff> {
    let mut sysctls = Vec::new();
    if v4 {
        for i in interfaces {
            sysctls.push((
                format!("net.ipv4.conf.{i}.forwarding"),
                format!("ipv4/conf/{i}/forwarding"),
            ));
        }
    }
    if v6 {
        sysctls.push((
            "net.ipv6.conf.all.forwarding".into(),
            "ipv6/conf/all/forwarding".into(),
        ));
    }
    for (sysctl, rel) in sysctls {
        let value = read(&PathBuf::from("/proc/sys/net").join(rel));
        if value != "1" {
            return Err(ForwardingOff { sysctl, value });
        }
    }
    Ok(())
}
