-- Pktgen-DPDK: a 16-packet sequence like pktgen-scripts/broadcast-mix.toml: 12 unicast to
-- owned addresses, 1 limited broadcast (255.255.255.255), 1 directed broadcast
-- (L3NS_BROADCAST, default 10.1.255.255) and 2 to unowned addresses (L3NS_UNOWNED base,
-- default 10.2.0.0).
--   pktgen -l 0-2 -n 4 -- -P -m "[1:2].0" -f pktgen-scripts/pktgen-dpdk/broadcast-mix.lua
package.path = package.path .. ";" .. (os.getenv("L3NS_PKTGEN_DIR") or "pktgen-scripts/pktgen-dpdk") .. "/?.lua"
require("Pktgen")
local l3ns = require("l3ns")

local broadcast = os.getenv("L3NS_BROADCAST") or "10.1.255.255"
local unowned_base = l3ns.ip_to_number(os.getenv("L3NS_UNOWNED") or "10.2.0.0")
local SEQ = 16 -- Pktgen's largest sequence

local function entry(dst_mac, dst_ip)
    return {
        ["eth_dst_addr"] = dst_mac,
        ["eth_src_addr"] = l3ns.src_mac,
        ["ip_dst_addr"] = dst_ip,
        ["ip_src_addr"] = l3ns.src_ip,
        ["sport"] = l3ns.sport,
        ["dport"] = l3ns.dport,
        ["ethType"] = "ipv4",
        ["ipProto"] = "udp",
        ["vlanid"] = 1,
        ["pktSize"] = l3ns.size,
    }
end

l3ns.setup()
for i = 0, SEQ - 1 do
    local e
    if i == 12 then
        e = entry("ff:ff:ff:ff:ff:ff", "255.255.255.255")
    elseif i == 13 then
        e = entry("ff:ff:ff:ff:ff:ff", broadcast)
    elseif i >= 14 then
        e = entry(l3ns.dst_mac, l3ns.number_to_ip(unowned_base + 1 + (i - 14)))
    else
        e = entry(l3ns.dst_mac, l3ns.owned(i % l3ns.owned_count()))
    end
    pktgen.seqTable(i, l3ns.port, e)
end
pktgen.set(l3ns.port, "seq_cnt", SEQ)

l3ns.run("broadcast-mix")
