-- Pktgen-DPDK: the scale case (pktgen-scripts/scale.toml): unicast over 1,000 namespaces x
-- 64 addresses (64,000 consecutive addresses from 10.1.0.1) at full line rate, with 64
-- source ports so RSS spreads the flows over l3ns's workers.
--   L3NS_RATE=100 pktgen -l 0-2 -n 4 -- -P -m "[1:2].0" -f pktgen-scripts/pktgen-dpdk/scale.lua
package.path = package.path .. ";" .. (os.getenv("L3NS_PKTGEN_DIR") or "pktgen-scripts/pktgen-dpdk") .. "/?.lua"
require("Pktgen")
local l3ns = require("l3ns")

l3ns.namespaces = tonumber(os.getenv("L3NS_NAMESPACES") or "1000")
l3ns.addrs = tonumber(os.getenv("L3NS_ADDRS") or "64")
l3ns.rate = tonumber(os.getenv("L3NS_RATE") or "100")

local range = pktgen.range or pktgen
local first = l3ns.owned(0)
local last = l3ns.owned(l3ns.owned_count() - 1)

l3ns.setup()
range.dst_mac(l3ns.port, "start", l3ns.dst_mac)
range.src_mac(l3ns.port, "start", l3ns.src_mac)
range.dst_ip(l3ns.port, "start", first)
range.dst_ip(l3ns.port, "inc", "0.0.0.1")
range.dst_ip(l3ns.port, "min", first)
range.dst_ip(l3ns.port, "max", last)
range.src_port(l3ns.port, "start", l3ns.sport)
range.src_port(l3ns.port, "inc", 1)
range.src_port(l3ns.port, "min", l3ns.sport)
range.src_port(l3ns.port, "max", l3ns.sport + 63)
range.dst_port(l3ns.port, "start", l3ns.dport)
range.dst_port(l3ns.port, "inc", 0)
range.dst_port(l3ns.port, "min", l3ns.dport)
range.dst_port(l3ns.port, "max", l3ns.dport)
range.pkt_size(l3ns.port, "start", l3ns.size)
range.pkt_size(l3ns.port, "inc", 0)
range.pkt_size(l3ns.port, "min", l3ns.size)
range.pkt_size(l3ns.port, "max", l3ns.size)
pktgen.set_range(l3ns.port, "on")

printf("l3ns scale: %s .. %s (%d addresses), 64 source ports\n", first, last, l3ns.owned_count())
l3ns.run("scale")
