-- Pktgen-DPDK: unicast UDP over every owned address of L3NS_NAMESPACES x L3NS_ADDRS (range
-- mode, destination address incremented per packet), to the echo port.
--   pktgen -l 0-2 -n 4 -- -P -m "[1:2].0" -f pktgen-scripts/pktgen-dpdk/unicast.lua
-- (run from the repository root, or set L3NS_PKTGEN_DIR to this directory)
package.path = package.path .. ";" .. (os.getenv("L3NS_PKTGEN_DIR") or "pktgen-scripts/pktgen-dpdk") .. "/?.lua"
require("Pktgen")
local l3ns = require("l3ns")

local range = pktgen.range or pktgen -- Pktgen >= 21 nests the range calls under pktgen.range
local first = l3ns.owned(0)
local last = l3ns.owned(l3ns.owned_count() - 1)

l3ns.setup()
range.dst_mac(l3ns.port, "start", l3ns.dst_mac)
range.src_mac(l3ns.port, "start", l3ns.src_mac)
range.dst_ip(l3ns.port, "start", first)
range.dst_ip(l3ns.port, "inc", "0.0.0.1")
range.dst_ip(l3ns.port, "min", first)
range.dst_ip(l3ns.port, "max", last)
range.src_ip(l3ns.port, "start", (l3ns.src_ip:gsub("/.*", "")))
range.src_ip(l3ns.port, "inc", "0.0.0.0")
range.src_ip(l3ns.port, "min", (l3ns.src_ip:gsub("/.*", "")))
range.src_ip(l3ns.port, "max", (l3ns.src_ip:gsub("/.*", "")))
range.dst_port(l3ns.port, "start", l3ns.dport)
range.dst_port(l3ns.port, "inc", 0)
range.dst_port(l3ns.port, "min", l3ns.dport)
range.dst_port(l3ns.port, "max", l3ns.dport)
range.src_port(l3ns.port, "start", l3ns.sport)
range.src_port(l3ns.port, "inc", 0)
range.src_port(l3ns.port, "min", l3ns.sport)
range.src_port(l3ns.port, "max", l3ns.sport)
range.pkt_size(l3ns.port, "start", l3ns.size)
range.pkt_size(l3ns.port, "inc", 0)
range.pkt_size(l3ns.port, "min", l3ns.size)
range.pkt_size(l3ns.port, "max", l3ns.size)
pktgen.set_range(l3ns.port, "on")

printf("l3ns unicast: %s .. %s (%d addresses)\n", first, last, l3ns.owned_count())
l3ns.run("unicast")
