#!/usr/bin/env bash
# Drive dpdk-testpmd as a traffic generator against an l3ns port (txonly or flowgen forward
# mode), for a bounded time, and print what it sent.
#
# The generator side is a DPDK virtual device: a memif client connected to l3nsd's memif
# server, an af_packet socket on one end of a veth pair whose other end l3nsd uses, or any
# other --vdev (net_null0 for a dry run of testpmd alone). See pktgen-scripts/README.md.
set -euo pipefail

prog=$(basename "$0")

usage() {
    cat <<EOF
usage: $prog [OPTIONS]

Runs dpdk-testpmd in a generator forward mode for --duration seconds (stopped with SIGINT by
timeout), then prints "$prog: sent N packets in S s (P pps)" from testpmd's final statistics.

Device (one of):
  --vdev SPEC          any DPDK vdev, e.g. net_null0 or net_ring0
  --memif SOCKET       net_memif0,role=client,socket=SOCKET,id=ID (l3nsd is the server)
  --memif-id ID        memif interface id (default 0)
  --af-packet IFACE    net_af_packet0,iface=IFACE (e.g. the generator end of a veth pair)

Traffic:
  --mode MODE          txonly (default) or flowgen
  --eth-peer MAC       destination MAC: the l3ns port's (default 02:00:00:00:0d:01)
  --src-ip IP          source address, txonly (default 10.1.255.254)
  --dst-ip IP          destination address, txonly (default 10.1.0.1)
  --src-port PORT      UDP source port, txonly (default 40000)
  --dst-port PORT      UDP destination port, txonly (default 7)
  --flows N            flowgen: --flowgen-flows N; txonly: N>1 adds --txonly-multi-flow
  --pkt-len BYTES      packet length without FCS (default 64)
  --burst N            packets per burst (default 32)
  --duration SECS      how long to send (default 10)

EAL:
  --lcores LIST        main and forwarding lcores (default 0,1)
  --mem MB             memory without hugepages, --no-huge -m MB (default 256)
  --huge               use hugepages (--in-memory) instead of --no-huge
  --mbufs N            mbufs in testpmd's pool (default 8192)
  --file-prefix NAME   EAL file prefix (default l3ns-testpmd-PID)
  --stats-period SECS  testpmd statistics period (default 1)
  --testpmd PATH       testpmd binary (default: dpdk-testpmd from PATH)
  --log FILE           keep testpmd's full output in FILE (default: a temporary file)
  --dry-run            print the command and exit
  -h, --help           this help

Note: testpmd 22.11's flowgen mode ignores --src-ip/--dst-ip/ports: it sends from
10.254.0.0 to 10.253.0.0 + (flow % N), UDP 1000 -> 1001 (hard-coded in flowgen.c), so the
l3ns configuration must own addresses of 10.253.0.0/16 for flowgen traffic to be delivered.

Exit status: 0 when packets were sent; 1 on a testpmd failure; 2 on bad arguments;
3 when testpmd ran but sent nothing (link down: is the memif server or the veth up?).
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
    local IFS=.
    local -a o
    [[ "$1" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || return 1
    read -r -a o <<<"$1"
    for x in "${o[@]}"; do
        ((x <= 255)) || return 1
    done
}

is_mac() {
    [[ "$1" =~ ^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$ ]]
}

mode=txonly
vdev=""
memif=""
memif_id=0
afpacket=""
eth_peer=02:00:00:00:0d:01
src_ip=10.1.255.254
dst_ip=10.1.0.1
src_port=40000
dst_port=7
flows=1
pkt_len=64
burst=32
duration=10
lcores=0,1
mem=256
huge=0
mbufs=8192
file_prefix="l3ns-testpmd-$$"
stats_period=1
testpmd=dpdk-testpmd
log=""
dry_run=0

while [[ $# -gt 0 ]]; do
    case "$1" in
    -h | --help)
        usage
        exit 0
        ;;
    --mode) need_value "$@"; mode=$2; shift 2 ;;
    --vdev) need_value "$@"; vdev=$2; shift 2 ;;
    --memif) need_value "$@"; memif=$2; shift 2 ;;
    --memif-id) need_value "$@"; memif_id=$2; shift 2 ;;
    --af-packet) need_value "$@"; afpacket=$2; shift 2 ;;
    --eth-peer) need_value "$@"; eth_peer=$2; shift 2 ;;
    --src-ip) need_value "$@"; src_ip=$2; shift 2 ;;
    --dst-ip) need_value "$@"; dst_ip=$2; shift 2 ;;
    --src-port) need_value "$@"; src_port=$2; shift 2 ;;
    --dst-port) need_value "$@"; dst_port=$2; shift 2 ;;
    --flows) need_value "$@"; flows=$2; shift 2 ;;
    --pkt-len) need_value "$@"; pkt_len=$2; shift 2 ;;
    --burst) need_value "$@"; burst=$2; shift 2 ;;
    --duration) need_value "$@"; duration=$2; shift 2 ;;
    --lcores) need_value "$@"; lcores=$2; shift 2 ;;
    --mem) need_value "$@"; mem=$2; shift 2 ;;
    --huge) huge=1; shift ;;
    --mbufs) need_value "$@"; mbufs=$2; shift 2 ;;
    --file-prefix) need_value "$@"; file_prefix=$2; shift 2 ;;
    --stats-period) need_value "$@"; stats_period=$2; shift 2 ;;
    --testpmd) need_value "$@"; testpmd=$2; shift 2 ;;
    --log) need_value "$@"; log=$2; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done

devices=0
[[ -n "$vdev" ]] && devices=$((devices + 1))
[[ -n "$memif" ]] && devices=$((devices + 1))
[[ -n "$afpacket" ]] && devices=$((devices + 1))
((devices == 1)) || die "give exactly one of --vdev, --memif, --af-packet"
if [[ -n "$memif" ]]; then
    is_uint "$memif_id" || die "--memif-id: not a number: $memif_id"
    vdev="net_memif0,role=client,socket=$memif,id=$memif_id"
elif [[ -n "$afpacket" ]]; then
    [[ "$afpacket" =~ ^[A-Za-z0-9_.:-]{1,15}$ ]] || die "--af-packet: bad interface name: $afpacket"
    vdev="net_af_packet0,iface=$afpacket"
fi
case "$mode" in
txonly | flowgen) ;;
*) die "--mode: txonly or flowgen, not $mode" ;;
esac
is_mac "$eth_peer" || die "--eth-peer: not a MAC address: $eth_peer"
is_ipv4 "$src_ip" || die "--src-ip: not an IPv4 address: $src_ip"
is_ipv4 "$dst_ip" || die "--dst-ip: not an IPv4 address: $dst_ip"
for v in src_port dst_port flows pkt_len burst duration mem mbufs stats_period; do
    is_uint "${!v}" || die "--${v//_/-}: not a number: ${!v}"
done
((src_port >= 1 && src_port <= 65535 && dst_port >= 1 && dst_port <= 65535)) || die "ports must be 1 to 65535"
((pkt_len >= 60 && pkt_len <= 1514)) || die "--pkt-len must be 60 to 1514"
((burst >= 1 && burst <= 512)) || die "--burst must be 1 to 512"
((duration >= 1)) || die "--duration must be at least 1 second"
((flows >= 1)) || die "--flows must be at least 1"
[[ "$lcores" =~ ^[0-9]+([,-][0-9]+)+$ ]] || die "--lcores needs at least two lcores (main + forwarding), e.g. 0,1"

eal=(--no-pci --file-prefix "$file_prefix" -l "$lcores" --vdev "$vdev" --log-level "lib.eal:error")
if ((huge)); then
    eal+=(--in-memory)
else
    eal+=(--no-huge -m "$mem")
fi
app=(--forward-mode="$mode" --stats-period "$stats_period" --eth-peer="0,$eth_peer"
    --txpkts="$pkt_len" --burst="$burst" --total-num-mbufs="$mbufs" --nb-cores=1)
if [[ "$mode" == txonly ]]; then
    app+=(--tx-ip="$src_ip,$dst_ip" --tx-udp="$src_port,$dst_port")
    ((flows > 1)) && app+=(--txonly-multi-flow)
else
    app+=(--flowgen-flows="$flows")
fi
cmd=("$testpmd" "${eal[@]}" -- "${app[@]}")

if ((dry_run)); then
    printf '%q ' timeout -s INT -k 10 "$duration" "${cmd[@]}"
    echo
    exit 0
fi

command -v "$testpmd" >/dev/null 2>&1 || {
    echo "$prog: $testpmd not found (apt-get install dpdk-dev)" >&2
    exit 1
}

if [[ -z "$log" ]]; then
    log=$(mktemp "${TMPDIR:-/tmp}/l3ns-testpmd.XXXXXX")
    trap 'rm -f "$log"' EXIT
fi

echo "$prog: ${cmd[*]}" >&2
rc=0
# SIGINT makes testpmd stop forwarding and print its final statistics; -k kills it if not.
timeout -s INT -k 10 "$duration" "${cmd[@]}" </dev/null >"$log" 2>&1 || rc=$?
# testpmd leaves its EAL runtime directory (some MB of tmpfs) behind; this run owned it.
rm -rf "/var/run/dpdk/$file_prefix"
# 124: stopped by timeout; 130: testpmd re-raised SIGINT after its cleanup.
if [[ $rc -ne 0 && $rc -ne 124 && $rc -ne 130 ]]; then
    echo "$prog: testpmd failed (exit $rc); last lines of its output:" >&2
    tail -n 20 "$log" >&2
    exit 1
fi

# The last "TX-packets:" line is the accumulated total of the final statistics.
sent=$(grep -E '^ +TX-packets: +[0-9]+ +TX-dropped' "$log" | tail -n 1 | awk '{print $2}' || true)
if [[ -z "$sent" ]]; then
    echo "$prog: testpmd printed no final statistics; last lines of its output:" >&2
    tail -n 20 "$log" >&2
    exit 1
fi
pps=$((sent / duration))
echo "$prog: sent $sent packets in $duration s ($pps pps) on $vdev, mode $mode"
if ((sent == 0)); then
    echo "$prog: nothing was sent: is the link up (memif server running, veth up)?" >&2
    exit 3
fi
