//! End to end with real Linux clients (issue 5): `l3nsd` on the host end of a veth pair whose
//! peer sits in a network namespace made by the test; the kernel's ARP, `ping`, Python UDP
//! sockets and scapy inside that namespace talk to it. Run once with the `afpacket` port and
//! (with the `dpdk` feature) once with DPDK's `net_af_packet` virtual device on the same kind
//! of veth. Only addresses inside the test's namespace and veth are used (10.97.0.0/24,
//! 10.96.0.0/24); every wait is bounded; the namespace, the veth and the daemon are removed
//! even when the test fails.

mod daemon_util;

use daemon_util::stop_gently;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const L3NSD: &str = env!("CARGO_BIN_EXE_l3nsd");
const L3NSCTL: &str = env!("CARGO_BIN_EXE_l3nsctl");
const CLIENT: &str = "10.97.0.99";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} {args:?}: {e}"))
}

fn ok(cmd: &str, args: &[&str]) {
    let o = run(cmd, args);
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The test's network: a namespace with the client end of a veth, the daemon on the host end.
struct Env {
    netns: String,
    host_if: String,
    peer_if: String,
    dir: PathBuf,
    daemon: Option<Child>,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            stop_gently(&mut d);
        }
        let _ = run("ip", &["link", "del", &self.host_if]);
        let _ = run("ip", &["netns", "del", &self.netns]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Env {
    fn new(tag: &str) -> Env {
        let pid = std::process::id();
        let env = Env {
            netns: format!("l3ns-e2e-{tag}-{pid}"),
            host_if: format!("l3h{tag}{}", pid % 100_000),
            peer_if: format!("l3p{tag}{}", pid % 100_000),
            dir: std::env::temp_dir().join(format!("l3ns-e2e-{tag}-{pid}")),
            daemon: None,
        };
        let _ = std::fs::remove_dir_all(&env.dir);
        std::fs::create_dir_all(&env.dir).unwrap();
        ok("ip", &["netns", "add", &env.netns]);
        ok(
            "ip",
            &[
                "link",
                "add",
                &env.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &env.peer_if,
            ],
        );
        ok("ip", &["link", "set", &env.peer_if, "netns", &env.netns]);
        let _ = run(
            "sysctl",
            &[
                "-qw",
                &format!("net.ipv6.conf.{}.disable_ipv6=1", env.host_if),
            ],
        );
        ok("ip", &["link", "set", &env.host_if, "up"]);
        env.ns(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{}.disable_ipv6=1", env.peer_if),
        ]);
        env.ns(&[
            "ip",
            "addr",
            "add",
            &format!("{CLIENT}/24"),
            "dev",
            &env.peer_if,
        ]);
        env.ns(&["ip", "link", "set", &env.peer_if, "up"]);
        env.ns(&["ip", "link", "set", "lo", "up"]);
        env
    }

    fn ns_out(&self, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", &self.netns];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    fn ns(&self, args: &[&str]) {
        let o = self.ns_out(args);
        assert!(
            o.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Runs a Python script inside the client namespace and returns its stdout.
    fn py(&self, script: &str) -> String {
        let o = self.ns_out(&["/usr/bin/python3", "-c", script]);
        assert!(
            o.status.success(),
            "python failed: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            script
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn control(&self) -> PathBuf {
        self.dir.join("ctl.sock")
    }

    fn ctl(&self, args: &[&str]) -> Value {
        let o = Command::new(L3NSCTL)
            .arg("--control")
            .arg(self.control())
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "l3nsctl {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        v.get("ok").cloned().unwrap_or(Value::Null)
    }

    fn ns_stats(&self, ns: &str) -> Value {
        let v = self.ctl(&["stats", "--ns", ns]);
        v["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["namespace"] == ns)
            .cloned()
            .unwrap()
    }

    fn counter(&self, ns: &str, name: &str) -> u64 {
        self.ns_stats(ns)[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name} for {ns}"))
    }

    fn port_drop(&self, reason: &str) -> u64 {
        let v = self.ctl(&["stats"]);
        v["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["dropped"][reason].as_u64().unwrap_or(0))
            .sum()
    }

    fn start(&mut self, port_toml: &str, eal_args: &str) {
        let config = format!(
            r#"
[dataplane]
workers = [0]
idle_sleep_us = 50
{eal_args}

{port_toml}

[[namespace]]
name = "web1"
[[namespace]]
name = "web2"
[[namespace]]
name = "web3"

[[address]]
address = "10.97.0.1/24"
dev = "veth0"
[[address]]
address = "10.97.0.2/24"
dev = "veth0"
assign_to = "web1"
[[address]]
address = "10.97.0.3/24"
dev = "veth0"
assign_to = "web2"
[[address]]
address = "10.96.0.3/24"
dev = "veth0"
assign_to = "web3"

[[socket]]
bind = "0.0.0.0:7"
service = "echo"
[[socket]]
namespace = "web1"
bind = "0.0.0.0:7"
service = "echo"
[[socket]]
namespace = "web2"
bind = "0.0.0.0:7"
service = "echo"
[[socket]]
bind = "0.0.0.0:9"
service = "sink"
[[socket]]
namespace = "web1"
bind = "0.0.0.0:9"
service = "sink"
[[socket]]
namespace = "web2"
bind = "0.0.0.0:9"
service = "sink"
[[socket]]
namespace = "web3"
bind = "0.0.0.0:9"
service = "sink"
[[socket]]
namespace = "web1"
bind = "10.97.0.2:5000"
service = "attach:{attach}"

[control]
socket = "{control}"

[metrics]
listen = "off"
"#,
            attach = self.dir.join("app.sock").display(),
            control = self.control().display(),
        );
        let path = self.dir.join("l3nsd.toml");
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(self.dir.join("l3nsd.log")).unwrap();
        let child = Command::new(L3NSD)
            .arg("--config")
            .arg(&path)
            .arg("--quiet")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let o = Command::new(L3NSCTL)
                .arg("--control")
                .arg(self.control())
                .arg("status")
                .output()
                .unwrap();
            if o.status.success() {
                break;
            }
            if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "l3nsd exited with {status}: {}",
                    std::fs::read_to_string(self.dir.join("l3nsd.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "l3nsd did not answer: {}",
                std::fs::read_to_string(self.dir.join("l3nsd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Sends one datagram per destination from the client and returns `(reply source, payload)`
/// for each, or `None` when nothing came back within the timeout.
const UDP_ASK: &str = r#"
import socket, sys, json
out = []
for dst in sys.argv[1:]:
    host, port = dst.split(':')
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    s.sendto(b'ping ' + host.encode(), (host, int(port)))
    try:
        data, addr = s.recvfrom(2048)
        out.append([addr[0], data.decode()])
    except (socket.timeout, ConnectionRefusedError):
        out.append(None)
    s.close()
print(json.dumps(out))
"#;

fn udp_ask(env: &Env, dsts: &[&str]) -> Vec<Option<(String, String)>> {
    let mut args = vec!["/usr/bin/python3", "-c", UDP_ASK];
    args.extend_from_slice(dsts);
    let o = env.ns_out(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Vec<Option<(String, String)>> = serde_json::from_slice(&o.stdout).unwrap();
    v
}

/// `kernel_defrag`: the AF_PACKET port's fanout group, like DPDK's af_packet PMD, asks the
/// kernel to reassemble fragments (`PACKET_FANOUT_FLAG_DEFRAG`), so a lone fragment never
/// reaches l3ns (the kernel's reassembly times it out); without it l3ns counts it `fragment`.
fn scenario(env: &mut Env, kernel_defrag: bool) {
    let our_mac = {
        let v = env.ctl(&["dev", "list"]);
        let dev = v
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "veth0")
            .cloned()
            .unwrap();
        dev["mac"].as_str().unwrap().to_string()
    };

    // R15: ARP for every namespace's address is answered, and ping to each works.
    for ip in ["10.97.0.1", "10.97.0.2", "10.97.0.3"] {
        env.ns(&["ping", "-c", "1", "-W", "3", ip]);
    }
    let neigh = String::from_utf8_lossy(
        &env.ns_out(&["ip", "neigh", "show", "dev", &env.peer_if])
            .stdout,
    )
    .to_lowercase();
    for ip in ["10.97.0.1", "10.97.0.2", "10.97.0.3"] {
        assert!(
            neigh.contains(&format!("{ip} lladdr {our_mac}")),
            "no ARP entry for {ip}: {neigh}"
        );
    }
    assert_eq!(env.counter("web2", "icmp_echo_replied"), 1);

    // R8, R9: each tenant answers from its own address; both listen on 0.0.0.0:7.
    let (w1, w2) = (
        env.counter("web1", "delivered"),
        env.counter("web2", "delivered"),
    );
    let r = udp_ask(env, &["10.97.0.2:7", "10.97.0.3:7"]);
    assert_eq!(
        r[0],
        Some(("10.97.0.2".into(), "ping 10.97.0.2".into())),
        "web1's echo from web1's address"
    );
    assert_eq!(
        r[1],
        Some(("10.97.0.3".into(), "ping 10.97.0.3".into())),
        "web2's echo from web2's address"
    );
    assert_eq!(env.counter("web1", "delivered"), w1 + 1);
    assert_eq!(env.counter("web2", "delivered"), w2 + 1);

    // R10: the limited broadcast reaches every sink on port 9; the directed one (10.97.0.255)
    // reaches root, web1 and web2 (they own an address of 10.97.0.0/24) but not web3.
    let before: Vec<u64> = ["root", "web1", "web2", "web3"]
        .iter()
        .map(|n| env.counter(n, "broadcast_delivered"))
        .collect();
    env.py(&format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\ns.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'{}')\ns.sendto(b'all', ('255.255.255.255', 9))\ns.sendto(b'subnet', ('10.97.0.255', 9))\n",
        env.peer_if
    ));
    let want = [2, 2, 2, 1];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now: Vec<u64> = ["root", "web1", "web2", "web3"]
            .iter()
            .map(|n| env.counter(n, "broadcast_delivered"))
            .collect();
        let got: Vec<u64> = now.iter().zip(&before).map(|(a, b)| a - b).collect();
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "broadcast copies per namespace {got:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // R14: a tenant sending from an address it does not own: nothing reaches the client. The
    // attached process behind web1's socket 10.97.0.2:5000 learns the service's address from a
    // first datagram, then answers once from web2's address and once from its own.
    let app = attach_process(env);
    let capture = r#"
import socket, sys, time, json
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
s.settimeout(0.2)
print('ready', flush=True)
seen = []
end = time.time() + float(sys.argv[2])
while time.time() < end:
    try:
        f = s.recv(2048)
    except socket.timeout:
        continue
    if len(f) >= 42 and f[12:14] == b'\x08\x00' and f[23] == 17 and int.from_bytes(f[36:38], 'big') == 6000:
        seen.append(socket.inet_ntoa(f[26:30]))
print(json.dumps(seen), flush=True)
"#;
    let mut cap = Command::new("ip")
        .args([
            "netns",
            "exec",
            &env.netns,
            "/usr/bin/python3",
            "-c",
            capture,
            &env.peer_if,
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut cap_out = std::io::BufReader::new(cap.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut cap_out, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let spoofed_before = env.counter("web1", "tx_spoofed");
    app.send_from("10.97.0.3", b"spoofed");
    app.send_from("10.97.0.2", b"honest");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut cap_out, &mut rest).unwrap();
    let _ = cap.wait();
    let seen: Vec<String> = serde_json::from_str(rest.trim()).unwrap();
    assert_eq!(
        seen,
        vec!["10.97.0.2".to_string()],
        "only web1's own address leaves"
    );
    assert_eq!(env.counter("web1", "tx_spoofed"), spoofed_before + 1);

    // R8: an unowned destination gets no answer and is counted unclaimed.
    env.ns(&[
        "ip",
        "neigh",
        "replace",
        "10.97.0.50",
        "lladdr",
        &our_mac,
        "dev",
        &env.peer_if,
    ]);
    let unclaimed = env.port_drop("unclaimed");
    assert_eq!(udp_ask(env, &["10.97.0.50:7"]), vec![None]);
    assert_eq!(env.port_drop("unclaimed"), unclaimed + 1);

    // Malformed frames crafted with scapy are counted; the daemon keeps answering.
    let scapy = format!(
        r#"
from scapy.all import Ether, IP, UDP, Raw, sendp, raw
import logging
logging.getLogger('scapy.runtime').setLevel(logging.ERROR)
e = Ether(dst='{our_mac}')
good = e/IP(src='{CLIENT}', dst='10.97.0.2')/UDP(sport=1000, dport=9)/Raw(b'x'*20)
frames = [
    e/IP(src='{CLIENT}', dst='10.97.0.2', chksum=0x1234)/UDP(sport=1000, dport=9)/Raw(b'x'),
    e/IP(src='{CLIENT}', dst='10.97.0.2', flags='MF')/UDP(sport=1000, dport=9)/Raw(b'x'*16),
    raw(good)[:30],
    e/IP(src='{CLIENT}', dst='10.97.0.2', ihl=4)/UDP(sport=1000, dport=9),
]
for f in frames:
    sendp(f, iface='{iface}', verbose=False)
"#,
        iface = env.peer_if
    );
    let want_malformed = if kernel_defrag { 3 } else { 4 };
    let malformed_before: u64 = [
        "bad_checksum",
        "fragment",
        "bad_total_length",
        "bad_ihl",
        "truncated",
    ]
    .iter()
    .map(|r| env.port_drop(r))
    .sum();
    env.py(&scapy);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now: u64 = [
            "bad_checksum",
            "fragment",
            "bad_total_length",
            "bad_ihl",
            "truncated",
        ]
        .iter()
        .map(|r| env.port_drop(r))
        .sum();
        if now - malformed_before == want_malformed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "malformed counted {} of {want_malformed}: {}",
            now - malformed_before,
            env.ctl(&["stats"])["ports"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(env.port_drop("bad_checksum") >= 1);
    assert_eq!(
        udp_ask(env, &["10.97.0.2:7"])[0]
            .as_ref()
            .map(|r| r.0.as_str()),
        Some("10.97.0.2"),
        "still answering"
    );

    // R4: after a pull the address answers from root (root listens on 0.0.0.0:7 too).
    let root_before = env.counter("root", "delivered");
    let w1_before = env.counter("web1", "delivered");
    env.ctl(&[
        "addr",
        "pull",
        "10.97.0.2",
        "dev",
        "veth0",
        "--from",
        "web1",
    ]);
    assert_eq!(
        udp_ask(env, &["10.97.0.2:7"])[0]
            .as_ref()
            .map(|r| r.0.as_str()),
        Some("10.97.0.2")
    );
    assert_eq!(
        env.counter("root", "delivered"),
        root_before + 1,
        "root answered"
    );
    assert_eq!(
        env.counter("web1", "delivered"),
        w1_before,
        "web1 no longer sees it"
    );

    // R5: after `ns del web2` its addresses are root's again.
    env.ctl(&["ns", "del", "web2"]);
    let all = env.ctl(&["addr", "show", "--all"]);
    let owner = all
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["local"] == "10.97.0.3")
        .map(|a| a["owner"].clone())
        .unwrap();
    assert_eq!(owner, "root");
    let root_before = env.counter("root", "delivered");
    assert_eq!(
        udp_ask(env, &["10.97.0.3:7"])[0]
            .as_ref()
            .map(|r| r.0.as_str()),
        Some("10.97.0.3")
    );
    assert_eq!(env.counter("root", "delivered"), root_before + 1);
}

/// The process attached to web1's socket `attach:DIR/app.sock`.
struct AttachedApp {
    sock: std::os::unix::net::UnixDatagram,
    service: std::os::unix::net::SocketAddr,
}

/// Binds the attach path and waits (bounded) until a datagram the client sends to
/// 10.97.0.2:5000 comes through, which tells the process the service's address.
fn attach_process(env: &Env) -> AttachedApp {
    use std::os::unix::net::UnixDatagram;
    let path = env.dir.join("app.sock");
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 2048];
    loop {
        env.py("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'hello app', ('10.97.0.2', 5000))\n");
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            assert!(n >= 12 && &buf[12..n] == b"hello app", "attach framing");
            return AttachedApp {
                sock,
                service: from,
            };
        }
        assert!(
            Instant::now() < deadline,
            "the attach service never delivered"
        );
    }
}

impl AttachedApp {
    /// Sends `payload` to 10.97.0.99:6000 from `src` (12-byte header of `service.rs`).
    fn send_from(&self, src: &str, payload: &[u8]) {
        use std::os::linux::net::SocketAddrExt;
        let mut msg = Vec::new();
        msg.extend_from_slice(&src.parse::<std::net::Ipv4Addr>().unwrap().octets());
        msg.extend_from_slice(&0u16.to_be_bytes());
        msg.extend_from_slice(&CLIENT.parse::<std::net::Ipv4Addr>().unwrap().octets());
        msg.extend_from_slice(&6000u16.to_be_bytes());
        msg.extend_from_slice(payload);
        match self.service.as_abstract_name() {
            Some(_) => self.sock.send_to_addr(&msg, &self.service).unwrap(),
            None => self
                .sock
                .send_to(&msg, self.service.as_pathname().unwrap())
                .unwrap(),
        };
    }
}

#[test]
fn afpacket_port_serves_real_linux_clients() {
    if !is_root() {
        eprintln!(
            "skipped: needs root (creates a veth pair and a network namespace, opens AF_PACKET)"
        );
        return;
    }
    let mut env = Env::new("a");
    let port = format!(
        "[[port]]\nname = \"veth0\"\nbackend = \"afpacket\"\niface = \"{}\"\n",
        env.host_if
    );
    env.start(&port, "");
    scenario(&mut env, true);
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_af_packet_vdev_serves_real_linux_clients() {
    if !is_root() {
        eprintln!("skipped: needs root (creates a veth pair and a network namespace, DPDK af_packet vdev)");
        return;
    }
    let mut env = Env::new("d");
    // DPDK's af_packet PMD does not complete the partial checksums of local veth traffic (the
    // afpacket port does, from TP_STATUS_CSUMNOTREADY): have the client's kernel compute them.
    env.ns(&["ethtool", "-K", &env.peer_if.clone(), "tx", "off"]);
    let pid = std::process::id();
    let port = format!("[[port]]\nname = \"veth0\"\nbackend = \"dpdk\"\ndpdk_args = \"net_af_packet{pid},iface={}\"\n", env.host_if);
    let eal = format!("eal_args = [\"--no-huge\", \"-m\", \"256\", \"--no-pci\", \"--file-prefix\", \"l3ns-e2e-{pid}\", \"-l\", \"0\", \"--log-level\", \"lib.eal:error\"]");
    env.start(&port, &eal);
    scenario(&mut env, true);
}
