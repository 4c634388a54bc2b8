#!/usr/bin/env bash
# Packets per second l3nsd receives and classifies on each backend over a veth (issue 5):
# l3ns-pktgen sends 60-byte UDP frames at full speed from a test network namespace to one
# tenant's sink; l3nsd runs on the host end with the afpacket port, then with DPDK's
# net_af_packet vdev on the same veth. Root only. Addresses: 10.95.9.0/24 inside the veth.
#
#   bench/scripts/backend_rx.sh [SECONDS]      (binaries from target/release and, for DPDK,
#                                               $L3NS_DPDK_BIN_DIR or /tmp/tgt-dpdk/release)
set -euo pipefail
secs=${1:-3}
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${L3NS_BIN_DIR:-$here/target/release}
dpdk_bin=${L3NS_DPDK_BIN_DIR:-/tmp/tgt-dpdk/release}
ns=l3ns-brx-$$
host=l3brh$$
peer=l3brp$$
dir=$(mktemp -d)
daemon=""
cleanup() {
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  ip link del "$host" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

ip netns add "$ns"
ip link add "$host" type veth peer name "$peer"
ip link set "$peer" netns "$ns"
sysctl -qw "net.ipv6.conf.$host.disable_ipv6=1"
ip netns exec "$ns" sysctl -qw "net.ipv6.conf.$peer.disable_ipv6=1"
ip link set "$host" up
ip -n "$ns" link set "$peer" up
mac=$(cat "/sys/class/net/$host/address")

run() { # name port-toml eal-toml l3nsd-binary
  local name=$1 port=$2 eal=$3 l3nsd=$4
  cat > "$dir/l3nsd.toml" <<CFG
[dataplane]
workers = [0]
idle_sleep_us = 0
$eal
$port
[[namespace]]
name = "web1"
[[address]]
address = "10.95.9.1/24"
dev = "veth0"
[[address]]
address = "10.95.9.2/24"
dev = "veth0"
assign_to = "web1"
[[socket]]
namespace = "web1"
bind = "0.0.0.0:9"
service = "sink"
[control]
socket = "$dir/ctl.sock"
[metrics]
listen = "off"
CFG
  "$l3nsd" --config "$dir/l3nsd.toml" --quiet > "$dir/l3nsd.log" 2>&1 &
  daemon=$!
  for _ in $(seq 200); do "$bin/l3nsctl" --control "$dir/ctl.sock" status > /dev/null 2>&1 && break; sleep 0.05; done
  local before after sent
  before=$("$bin/l3nsctl" --control "$dir/ctl.sock" --json stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["ok"]["ports"][0]["rx_packets"])')
  sent=$(timeout $((secs + 20)) ip netns exec "$ns" "$bin/l3ns-pktgen" --backend afpacket --iface "$peer" \
      --src-ip 10.95.9.99 --dst-mac "$mac" --namespaces 1 --addresses-per-ns 1 --addr-base 10.95.9.1 \
      --dst-port 9 --rate 0 --duration "$secs" --no-echo --json -q | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["sent"]["packets"])')
  after=$("$bin/l3nsctl" --control "$dir/ctl.sock" --json stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["ok"]["ports"][0]["rx_packets"])')
  kill "$daemon"; wait "$daemon" 2>/dev/null || true; daemon=""
  python3 -c "print(f'{\"$name\":<28} sent {$sent:>10}  received {$((after - before)):>10}  = {($after - $before) / $secs / 1e6:.3f} Mpps received')"
}

run afpacket "[[port]]
name = \"veth0\"
backend = \"afpacket\"
iface = \"$host\"" "" "$bin/l3nsd"
if [ -x "$dpdk_bin/l3nsd" ]; then
  run "dpdk net_af_packet" "[[port]]
name = \"veth0\"
backend = \"dpdk\"
dpdk_args = \"net_af_packet$$,iface=$host\"" "eal_args = [\"--no-huge\", \"-m\", \"256\", \"--no-pci\", \"--file-prefix\", \"l3ns-brx-$$\", \"-l\", \"0\", \"--log-level\", \"lib.eal:error\"]" "$dpdk_bin/l3nsd"
else
  echo "dpdk: no l3nsd built with --features dpdk in $dpdk_bin (CARGO_TARGET_DIR=/tmp/tgt-dpdk cargo build --release -p l3ns-control --features dpdk --bins)"
fi
