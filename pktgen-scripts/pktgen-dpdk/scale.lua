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

l3ns.setup()
local first, last = l3ns.range_over_owned(64)

printf("l3ns scale: %s .. %s (%d addresses), 64 source ports\n", first, last, l3ns.owned_count())
l3ns.run("scale")
