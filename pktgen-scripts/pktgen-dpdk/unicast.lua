-- Pktgen-DPDK: unicast UDP over every owned address of L3NS_NAMESPACES x L3NS_ADDRS (range
-- mode, destination address incremented per packet), to the echo port.
--   pktgen -l 0-2 -n 4 -- -P -m "[1:2].0" -f pktgen-scripts/pktgen-dpdk/unicast.lua
-- (run from the repository root, or set L3NS_PKTGEN_DIR to this directory)
package.path = package.path .. ";" .. (os.getenv("L3NS_PKTGEN_DIR") or "pktgen-scripts/pktgen-dpdk") .. "/?.lua"
require("Pktgen")
local l3ns = require("l3ns")

l3ns.setup()
local first, last = l3ns.range_over_owned(1)

printf("l3ns unicast: %s .. %s (%d addresses)\n", first, last, l3ns.owned_count())
l3ns.run("unicast")
