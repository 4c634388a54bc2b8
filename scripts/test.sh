#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what the tests need, then
# runs clippy and every test with the dpdk feature on. Tests that need root (veth, network
# namespaces, AF_PACKET, DPDK af_packet vdevs) run when this is run as root, as CI does;
# otherwise they say why they are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=(pkg-config dpdk dpdk-dev libdpdk-dev iproute2 iputils-ping ethtool python3 python3-scapy prometheus lua5.4 shellcheck)
missing=()
for p in "${need_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    echo "missing packages (run as root to install): ${missing[*]}" >&2
  fi
fi

features=()
if pkg-config --exists libdpdk 2>/dev/null; then
  features=(--features dpdk)
else
  echo "libdpdk not found: building without the dpdk feature (DPDK tests skipped)" >&2
fi

cargo clippy --workspace --all-targets "${features[@]}" -- -D warnings
# Generator scripts that cannot run here (Pktgen-DPDK Lua, kernel pktgen) are at least parsed.
bash pktgen-scripts/check.sh
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace "${features[@]}" --no-fail-fast
else
  cargo test --workspace "${features[@]}" --no-fail-fast
fi
