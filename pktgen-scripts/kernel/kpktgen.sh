#!/usr/bin/env bash
# Linux kernel pktgen (/proc/net/pktgen) as a generator for l3ns, on a NIC-bound host: one
# kernel thread per --threads, each sending on the same interface (queue per thread), UDP to
# the owned addresses of an l3ns port (or a broadcast), then the per-thread results.
#
# Needs the pktgen module (modprobe pktgen; CONFIG_NET_PKTGEN) and root. It cannot run on the
# project's development machines (their kernel has no pktgen module); check.sh only lints it.
set -euo pipefail

prog=$(basename "$0")
PGDIR=/proc/net/pktgen

usage() {
    cat <<EOF
usage: $prog --iface IF --dst-mac MAC [OPTIONS]

Presets (the kinds of pktgen-scripts/*.toml; options after --preset override it):
  --preset unicast     owned addresses 10.1.0.1 .. 10.1.0.4 (default)
  --preset scale       64,000 owned addresses 10.1.0.1 .. 10.1.250.0, 64 source ports
  --preset limited     255.255.255.255 to ff:ff:ff:ff:ff:ff
  --preset directed    10.1.255.255 to ff:ff:ff:ff:ff:ff
  --preset unowned     10.2.0.1 .. 10.2.0.255 (nobody owns them)

Options:
  --iface IF           interface to send on (required)
  --dst-mac MAC        the l3ns port's MAC (required unless the preset is a broadcast)
  --src-ip IP          source address (default 10.1.255.254)
  --src-mac MAC        source MAC (default: the interface's)
  --dst-min IP         first destination address
  --dst-max IP         last destination address (addresses are walked in order)
  --udp-src-min PORT   --udp-src-max PORT   source port range (default 40000 40000)
  --udp-dst PORT       destination port (default 7, an echo service)
  --count N            packets per thread, 0 = until stopped (default 1000000)
  --pkt-size BYTES     frame size with FCS (default 64; pktgen's pkt_size is 4 less)
  --rate-pps N         packets per second per thread, 0 = as fast as possible (default 0)
  --threads N          kernel threads, one per CPU from 0 (default 1)
  --clone-skb N        send each skb N more times (default 0: every packet rebuilt)
  --dry-run            print the /proc/net/pktgen writes instead of doing them
  -h, --help           this help
EOF
}

die() {
    echo "$prog: $*" >&2
    exit 2
}

need_value() {
    [[ $# -ge 2 && -n "$2" ]] || die "option $1 needs a value (see --help)"
}

is_uint() {
    [[ "$1" =~ ^[0-9]+$ ]]
}

is_ipv4() {
    [[ "$1" =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}$ ]]
}

is_mac() {
    [[ "$1" =~ ^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$ ]]
}

iface=""
dst_mac=""
src_mac=""
src_ip=10.1.255.254
dst_min=10.1.0.1
dst_max=10.1.0.4
udp_src_min=40000
udp_src_max=40000
udp_dst=7
count=1000000
pkt_size=64
rate_pps=0
threads=1
clone_skb=0
dry_run=0
broadcast=0

preset() {
    case "$1" in
    unicast) dst_min=10.1.0.1 dst_max=10.1.0.4 broadcast=0 ;;
    scale) dst_min=10.1.0.1 dst_max=10.1.250.0 udp_src_max=40063 broadcast=0 ;;
    limited) dst_min=255.255.255.255 dst_max=255.255.255.255 broadcast=1 ;;
    directed) dst_min=10.1.255.255 dst_max=10.1.255.255 broadcast=1 ;;
    unowned) dst_min=10.2.0.1 dst_max=10.2.0.255 broadcast=0 ;;
    *) die "--preset: unicast, scale, limited, directed or unowned, not $1" ;;
    esac
}

while [[ $# -gt 0 ]]; do
    case "$1" in
    -h | --help)
        usage
        exit 0
        ;;
    --preset) need_value "$@"; preset "$2"; shift 2 ;;
    --iface) need_value "$@"; iface=$2; shift 2 ;;
    --dst-mac) need_value "$@"; dst_mac=$2; shift 2 ;;
    --src-mac) need_value "$@"; src_mac=$2; shift 2 ;;
    --src-ip) need_value "$@"; src_ip=$2; shift 2 ;;
    --dst-min) need_value "$@"; dst_min=$2; shift 2 ;;
    --dst-max) need_value "$@"; dst_max=$2; shift 2 ;;
    --udp-src-min) need_value "$@"; udp_src_min=$2; shift 2 ;;
    --udp-src-max) need_value "$@"; udp_src_max=$2; shift 2 ;;
    --udp-dst) need_value "$@"; udp_dst=$2; shift 2 ;;
    --count) need_value "$@"; count=$2; shift 2 ;;
    --pkt-size) need_value "$@"; pkt_size=$2; shift 2 ;;
    --rate-pps) need_value "$@"; rate_pps=$2; shift 2 ;;
    --threads) need_value "$@"; threads=$2; shift 2 ;;
    --clone-skb) need_value "$@"; clone_skb=$2; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done

[[ -n "$iface" ]] || die "--iface is required"
[[ "$iface" =~ ^[A-Za-z0-9_.:-]{1,15}$ ]] || die "--iface: bad interface name: $iface"
if ((broadcast)); then
    dst_mac=${dst_mac:-ff:ff:ff:ff:ff:ff}
fi
[[ -n "$dst_mac" ]] || die "--dst-mac is required (the l3ns port's MAC)"
is_mac "$dst_mac" || die "--dst-mac: not a MAC address: $dst_mac"
[[ -z "$src_mac" ]] || is_mac "$src_mac" || die "--src-mac: not a MAC address: $src_mac"
for v in src_ip dst_min dst_max; do
    is_ipv4 "${!v}" || die "--${v//_/-}: not an IPv4 address: ${!v}"
done
for v in udp_src_min udp_src_max udp_dst count pkt_size rate_pps threads clone_skb; do
    is_uint "${!v}" || die "--${v//_/-}: not a number: ${!v}"
done
((pkt_size >= 64 && pkt_size <= 1518)) || die "--pkt-size must be 64 to 1518"
((threads >= 1)) || die "--threads must be at least 1"
((udp_src_min <= udp_src_max && udp_src_max <= 65535 && udp_dst >= 1 && udp_dst <= 65535)) ||
    die "bad UDP ports"

# pgset FILE COMMAND: one pktgen command, checked (pktgen reports errors in the file's
# "Result:" line).
pgset() {
    local file=$1 cmd=$2
    if ((dry_run)); then
        echo "echo '$cmd' > $file"
        return 0
    fi
    echo "$cmd" >"$file"
    if [[ "$file" != "$PGDIR/pgctrl" ]] && ! grep -q '^Result: OK' "$file"; then
        echo "$prog: pktgen refused '$cmd' in $file: $(grep '^Result:' "$file" || true)" >&2
        exit 1
    fi
}

if ((!dry_run)); then
    [[ $EUID -eq 0 ]] || { echo "$prog: must run as root" >&2; exit 1; }
    [[ -d "$PGDIR" ]] || modprobe pktgen 2>/dev/null || true
    [[ -d "$PGDIR" ]] || {
        echo "$prog: $PGDIR missing: this kernel has no pktgen module (CONFIG_NET_PKTGEN)" >&2
        exit 1
    }
    [[ -e "/sys/class/net/$iface" ]] || { echo "$prog: no such interface: $iface" >&2; exit 1; }
fi

cleanup() {
    local t
    for ((t = 0; t < threads; t++)); do
        if ((dry_run)) || [[ -e "$PGDIR/kpktgend_$t" ]]; then
            pgset "$PGDIR/kpktgend_$t" "rem_device_all"
        fi
    done
}
trap cleanup EXIT

for ((t = 0; t < threads; t++)); do
    dev="$iface@$t"
    pgset "$PGDIR/kpktgend_$t" "rem_device_all"
    pgset "$PGDIR/kpktgend_$t" "add_device $dev"
    f="$PGDIR/$dev"
    pgset "$f" "count $count"
    pgset "$f" "clone_skb $clone_skb"
    pgset "$f" "pkt_size $((pkt_size - 4))"
    pgset "$f" "queue_map_min $t"
    pgset "$f" "queue_map_max $t"
    pgset "$f" "delay 0"
    if ((rate_pps > 0)); then
        pgset "$f" "ratep $rate_pps"
    fi
    pgset "$f" "dst_mac $dst_mac"
    if [[ -n "$src_mac" ]]; then
        pgset "$f" "src_mac $src_mac"
    fi
    pgset "$f" "src_min $src_ip"
    pgset "$f" "src_max $src_ip"
    pgset "$f" "dst_min $dst_min"
    pgset "$f" "dst_max $dst_max"
    pgset "$f" "udp_src_min $udp_src_min"
    pgset "$f" "udp_src_max $udp_src_max"
    pgset "$f" "udp_dst_min $udp_dst"
    pgset "$f" "udp_dst_max $udp_dst"
    # Walk addresses and ports in order (not randomly), like l3ns-pktgen's ring.
    pgset "$f" "flag !IPDST_RND"
    pgset "$f" "flag !UDPSRC_RND"
done

echo "$prog: sending on $iface with $threads thread(s): $dst_min .. $dst_max port $udp_dst, $count packets per thread" >&2
# Blocks until every thread has sent its count (or Ctrl-C, which stops them).
pgset "$PGDIR/pgctrl" "start"

if ((!dry_run)); then
    for ((t = 0; t < threads; t++)); do
        echo "== $iface@$t"
        sed -n '/^Result:/,$p' "$PGDIR/$iface@$t"
    done
fi
