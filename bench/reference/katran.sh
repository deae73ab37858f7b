#!/bin/sh
# Builds Katran's XDP balancer from a checkout, pins it and sets it up for
# the IPv4 cases of `cargo xtask bench xdp`, as the reference measured
# beside lb_xdp in the same rounds:
#
#   bench/reference/katran.sh ~/src/katran [CPU]
#   cargo xtask bench xdp -- --reference /sys/fs/bpf/lb-bench-reference/prog
#   bench/reference/katran.sh --remove
#
# Set it up again before each run: its tables keep what the last run
# entered, as lb_xdp's fixture (new for every run) does not, and a full
# table makes its new flows dearer (about 1.7x here).
#
# Katran is not vendored here (nor fetched: this machine reaches only the
# package registries); bring a checkout of github.com/facebookincubator/katran.
#
# Set-up, mirroring the bench's fixture (bench/src/xdp.rs):
# - VIPs 192.0.2.10 TCP ports 80 (the nat cases), 82 (the cache-cold
#   case) and 443 (the dsr cases), all to one real, 10.0.0.1, so every
#   frame is encapsulated and sent back with XDP_TX;
# - a connection table (Katran's per-CPU LRU) of 262,144 flows, the bench
#   table's capacity (the daemon's default), for CPU (default 1, the
#   bench's `--cpu`): the only CPU it runs on;
# - MAX_CONN_RATE raised: Katran stops inserting new flows into its table
#   beyond 125,000 new flows a second per CPU (its flood guard), a rate
#   the new-flow cases exceed, and the reference must pay its insert as
#   lb_xdp pays its own;
# - built for the same BPF instruction set as lb_xdp (-mcpu=v3).
#
# The bench checks only that each run ends in XDP_TX. Katran's own
# counters (`bpftool map dump pinned $PIN/maps/stats`) tell whether it
# took the paths measured (LRU misses, inserts).
set -eu

PIN=/sys/fs/bpf/lb-bench-reference
LRU_FLOWS=262144

if [ "${1:-}" = "--remove" ]; then
    rm -rf "$PIN"
    exit 0
fi
if [ $# -lt 1 ] || [ $# -gt 2 ] || [ ! -f "$1/katran/lib/bpf/balancer.bpf.c" ]; then
    echo "usage: $0 KATRAN_CHECKOUT [CPU] | $0 --remove" >&2
    exit 2
fi
src=$(cd "$1" && pwd)
cpu=${2:-1}
case $cpu in
'' | *[!0-9]*)
    echo "$0: CPU must be a number, not $cpu" >&2
    exit 2
    ;;
esac

apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get update >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >/dev/null
}
clang=$(command -v clang-19 || command -v clang || true)
if [ -z "$clang" ]; then
    apt_install clang-19
    clang=clang-19
fi
command -v bpftool >/dev/null || apt_install bpftool
command -v python3 >/dev/null || apt_install python3

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Debian's multiarch headers name a 32-bit stubs file the BPF target
# does not need.
mkdir -p "$work/include/gnu"
touch "$work/include/gnu/stubs-32.h"
arch_include=/usr/include/$(uname -m)-linux-gnu
"$clang" -O2 -g -w -target bpf -mcpu=v3 -DMAX_CONN_RATE=4000000000 \
    -I"$src" -I"$work/include" -I"$arch_include" \
    -c "$src/katran/lib/bpf/balancer.bpf.c" -o "$work/balancer.o"

rm -rf "$PIN"
mkdir -p "$PIN"
bpftool prog load "$work/balancer.o" "$PIN/prog" type xdp pinmaps "$PIN/maps"
maps=$PIN/maps

# vip_definition {vip (16 bytes), port (network order), proto, pad} ->
# vip_meta {flags, vip_num}.
vip() { # port_hi port_lo vip_num
    bpftool map update pinned "$maps/vip_map" \
        key 192 0 2 10 0 0 0 0 0 0 0 0 0 0 0 0 "$1" "$2" 6 0 \
        value 0 0 0 0 "$3" 0 0 0
}
vip 0 80 0
vip 0 82 1
vip 1 187 2
# Real 1 (real 0 means "none" to Katran): real_definition {dst, flags}.
bpftool map update pinned "$maps/reals" key 1 0 0 0 \
    value 10 0 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
# The default router's MAC, the outer frame's destination.
bpftool map update pinned "$maps/ctl_array" key 0 0 0 0 value 2 0 0 0 0 1 0 0
# Every slot of the three VIPs' rings (65,537 each) names real 1.
python3 - "$maps/ch_rings" >"$work/rings" <<'PY'
import sys
ring = 65537
for slot in range(3 * ring):
    key = " ".join(str(b) for b in slot.to_bytes(4, "little"))
    print(f"map update pinned {sys.argv[1]} key {key} value 1 0 0 0")
PY
bpftool batch file "$work/rings" >/dev/null
# The LRU table of CPU `cpu` (flow_key: 40 bytes, real_pos_lru: 16); the
# key of `lru_mapping` is the CPU's number, 4 bytes little-endian.
cpu_key=$(python3 -c "print(' '.join(str(b) for b in ($cpu).to_bytes(4, 'little')))")
bpftool map create "$PIN/lru" type lru_hash key 40 value 16 \
    entries "$LRU_FLOWS" name lbref_lru
# shellcheck disable=SC2086 # the key is four words
bpftool map update pinned "$maps/lru_mapping" key $cpu_key value pinned "$PIN/lru"
echo "pinned at $PIN/prog: cargo xtask bench xdp -- --reference $PIN/prog"
