-- Shared settings and helpers of the l3ns Pktgen-DPDK scripts (Pktgen-DPDK's Lua API).
-- Settings come from environment variables so one script serves many setups:
--   L3NS_PORT        Pktgen port list to send on         (default "0")
--   L3NS_DST_MAC     the l3ns port's MAC                 (default 02:00:00:00:0d:01)
--   L3NS_SRC_MAC     the generator's MAC                 (default 02:00:00:00:0d:99)
--   L3NS_SRC_IP      the generator's address/prefix      (default 10.1.255.254/16)
--   L3NS_BASE        base of the owned addresses         (default 10.1.0.0)
--   L3NS_FIRST       offset of the first owned address   (default 1)
--   L3NS_NAMESPACES  namespaces                          (default 4)
--   L3NS_ADDRS       addresses per namespace             (default 1)
--   L3NS_DPORT       UDP destination port (echo)         (default 7)
--   L3NS_RATE        percent of line rate                (default 10)
--   L3NS_SIZE        frame size with FCS                 (default 64)
--   L3NS_DURATION    seconds to send                     (default 10)
-- Owned address j of namespace i is BASE + FIRST + i * ADDRS + j, as l3ns-pktgen's profiles.

local M = {}

local function env(name, default)
    local v = os.getenv(name)
    if v == nil or v == "" then
        return default
    end
    return v
end

local function env_number(name, default)
    local v = tonumber(env(name, tostring(default)))
    if v == nil then
        error(name .. " is not a number")
    end
    return v
end

M.port = env("L3NS_PORT", "0")
M.dst_mac = env("L3NS_DST_MAC", "02:00:00:00:0d:01")
M.src_mac = env("L3NS_SRC_MAC", "02:00:00:00:0d:99")
M.src_ip = env("L3NS_SRC_IP", "10.1.255.254/16")
M.base = env("L3NS_BASE", "10.1.0.0")
M.first = env_number("L3NS_FIRST", 1)
M.namespaces = env_number("L3NS_NAMESPACES", 4)
M.addrs = env_number("L3NS_ADDRS", 1)
M.dport = env_number("L3NS_DPORT", 7)
M.sport = 40000
M.rate = env_number("L3NS_RATE", 10)
M.size = env_number("L3NS_SIZE", 64)
M.duration = env_number("L3NS_DURATION", 10)

-- "a.b.c.d" -> number
function M.ip_to_number(s)
    local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    if a == nil then
        error("not an IPv4 address: " .. s)
    end
    return ((tonumber(a) * 256 + tonumber(b)) * 256 + tonumber(c)) * 256 + tonumber(d)
end

-- number -> "a.b.c.d"
function M.number_to_ip(n)
    local d = n % 256
    n = (n - d) / 256
    local c = n % 256
    n = (n - c) / 256
    local b = n % 256
    local a = (n - b) / 256
    return string.format("%d.%d.%d.%d", a, b, c, d)
end

-- Owned address k (0-based, namespaces own consecutive blocks of M.addrs).
function M.owned(k)
    return M.number_to_ip(M.ip_to_number(M.base) + M.first + k)
end

-- Number of owned addresses.
function M.owned_count()
    return M.namespaces * M.addrs
end

-- Common port setup: MACs, source address, UDP, size, rate.
function M.setup()
    pktgen.set_mac(M.port, "dst", M.dst_mac)
    pktgen.set_mac(M.port, "src", M.src_mac)
    pktgen.set_ipaddr(M.port, "src", M.src_ip)
    pktgen.set_proto(M.port, "udp")
    pktgen.set(M.port, "size", M.size)
    pktgen.set(M.port, "rate", M.rate)
    pktgen.set(M.port, "sport", M.sport)
    pktgen.set(M.port, "dport", M.dport)
end

-- Range mode: one field from `start`, stepping by `inc`, between `min` and `max`
-- (Pktgen >= 21 nests the range calls under pktgen.range).
function M.range(field, start, inc, min, max)
    local range = pktgen.range or pktgen
    range[field](M.port, "start", start)
    range[field](M.port, "inc", inc)
    range[field](M.port, "min", min)
    range[field](M.port, "max", max)
end

-- Range mode with every packet sending the constant `value` in `field`.
function M.fixed(field, value, zero)
    M.range(field, value, zero or 0, value, value)
end

-- Range mode over every owned address, the other fields fixed: `src_ports` source ports
-- (1 = none varied), then switches range mode on.
function M.range_over_owned(src_ports)
    local range = pktgen.range or pktgen
    local first, last = M.owned(0), M.owned(M.owned_count() - 1)
    local src = (M.src_ip:gsub("/.*", ""))
    range.dst_mac(M.port, "start", M.dst_mac)
    range.src_mac(M.port, "start", M.src_mac)
    M.range("dst_ip", first, "0.0.0.1", first, last)
    M.fixed("src_ip", src, "0.0.0.0")
    M.fixed("dst_port", M.dport)
    if src_ports > 1 then
        M.range("src_port", M.sport, 1, M.sport, M.sport + src_ports - 1)
    else
        M.fixed("src_port", M.sport)
    end
    M.fixed("pkt_size", M.size)
    pktgen.set_range(M.port, "on")
    return first, last
end

-- Sends for M.duration seconds, then prints the port's counters.
function M.run(what)
    printf("l3ns %s: sending on port %s for %d s at %d%% of line rate\n",
        what, M.port, M.duration, M.rate)
    pktgen.clr()
    pktgen.start(M.port)
    pktgen.delay(M.duration * 1000)
    pktgen.stop(M.port)
    pktgen.delay(500)
    local stats = pktgen.portStats(M.port, "port")
    for port, s in pairs(stats) do
        if type(s) == "table" then
            printf("l3ns %s: port %s sent %s packets, received %s\n",
                what, tostring(port), tostring(s.opackets), tostring(s.ipackets))
        end
    end
end

return M
