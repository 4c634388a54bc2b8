//! `l3ns-pktgen`: sends a traffic profile over an l3ns port backend and counts what comes back.
//!
//! ```text
//! l3ns-pktgen --backend memory --count 10000 --json
//! l3ns-pktgen --backend afpacket --iface veth0 --profile pktgen-scripts/unicast.toml --rate 10000 --duration 5
//! l3ns-pktgen --backend dpdk --dpdk-args "--no-pci --in-memory --file-prefix pg --vdev net_memif0,role=client,socket=/run/l3ns.sock" \
//!             --device net_memif0 --profile pktgen-scripts/scale.toml
//! ```
//! See `pktgen-scripts/README.md` for the profile format.

use clap::{Parser, ValueEnum};
use l3ns_bench::pktgen::profile::{parse_override, toml_value};
use l3ns_bench::pktgen::sink::MemorySink;
use l3ns_bench::pktgen::{run, Kind, Profile, Report, RunContext};
use l3ns_dataplane::port::memory::{memory_pair, TxMode};
use l3ns_dataplane::port::PortInfo;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// In-process port and receiver (self-test; no privileges).
    Memory,
    /// AF_PACKET on a Linux interface (needs CAP_NET_RAW).
    Afpacket,
    /// A DPDK device (build with `--features dpdk`).
    Dpdk,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Afpacket => "afpacket",
            Backend::Dpdk => "dpdk",
        }
    }
}

/// Sends a traffic profile over an l3ns port backend, counts the echo replies, answers ARP
/// for its own address, and reports sent, received, loss and per-kind counts.
#[derive(Parser, Debug)]
#[command(name = "l3ns-pktgen", version, about, long_about = None)]
struct Cli {
    /// Port backend.
    #[arg(long, value_enum, default_value = "memory")]
    backend: Backend,
    /// Interface for `--backend afpacket`.
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
    /// Put the AF_PACKET interface in promiscuous mode (implied by a fixed --src-mac).
    #[arg(long)]
    promiscuous: bool,
    /// EAL arguments for `--backend dpdk`, split on whitespace (program name added), e.g.
    /// "--no-pci --in-memory --file-prefix pg --vdev net_memif0,role=client,socket=/run/m.sock".
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    dpdk_args: Option<String>,
    /// DPDK device name for `--backend dpdk` (e.g. net_memif0); default: the first --vdev's name.
    #[arg(long, value_name = "NAME")]
    device: Option<String>,

    /// Profile (TOML, see pktgen-scripts/); without it, the built-in defaults.
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// Override any profile field: SECTION.FIELD=VALUE (repeatable), e.g. --set mix.unowned=5.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,

    /// Frames per second (token bucket, bursts of run.burst); 0 = full speed. [run.rate]
    #[arg(long, value_name = "PPS")]
    rate: Option<f64>,
    /// Frames to send. [run.count]
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Seconds to send. [run.duration]
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Frames per burst. [run.burst]
    #[arg(long, value_name = "N")]
    burst: Option<usize>,
    /// Seconds to keep receiving after the last frame. [run.drain]
    #[arg(long, value_name = "SECS")]
    drain: Option<f64>,
    /// Prepared frames in the ring (0 = auto). [run.ring]
    #[arg(long, value_name = "N")]
    ring: Option<usize>,
    /// Shuffle the ring. [run.shuffle]
    #[arg(long)]
    shuffle: bool,
    /// Shuffle seed. [run.seed]
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Send a gratuitous ARP for the source address first. [run.gratuitous_arp]
    #[arg(long)]
    gratuitous_arp: bool,
    /// Busy-poll instead of sleeping while pacing. [run.spin]
    #[arg(long)]
    spin: bool,

    /// Destination MAC, or "auto" (ARP for the first unicast address). [frame.dst_mac]
    #[arg(long, value_name = "MAC")]
    dst_mac: Option<String>,
    /// Source MAC, or "auto" (the port's). [frame.src_mac]
    #[arg(long, value_name = "MAC")]
    src_mac: Option<String>,
    /// Source IPv4 address (echo replies come back to it; ARP is answered for it). [frame.src_ip]
    #[arg(long, value_name = "IP")]
    src_ip: Option<String>,
    /// First UDP source port. [frame.src_port]
    #[arg(long, value_name = "PORT")]
    src_port: Option<u16>,
    /// Number of UDP source ports. [frame.src_ports]
    #[arg(long, value_name = "N")]
    src_ports: Option<u16>,
    /// UDP destination port. [frame.dst_port]
    #[arg(long, value_name = "PORT")]
    dst_port: Option<u16>,
    /// Frame length without FCS (64 by default). [frame.frame_size]
    #[arg(long, value_name = "BYTES")]
    frame_size: Option<usize>,
    /// IPv4 TTL. [frame.ttl]
    #[arg(long, value_name = "N")]
    ttl: Option<u8>,
    /// The destination port is not an echo service: report no loss. [frame.echo = false]
    #[arg(long)]
    no_echo: bool,

    /// Namespaces unicast is spread over. [unicast.namespaces]
    #[arg(long, value_name = "N")]
    namespaces: Option<u32>,
    /// Addresses per namespace. [unicast.addresses_per_namespace]
    #[arg(long, value_name = "M")]
    addresses_per_ns: Option<u32>,
    /// Base of the unicast addresses. [unicast.base]
    #[arg(long, value_name = "IP")]
    addr_base: Option<String>,
    /// Offset of the first unicast address from the base. [unicast.first]
    #[arg(long, value_name = "K")]
    addr_first: Option<u32>,
    /// Distance between namespaces' first addresses (0 = addresses per namespace). [unicast.stride]
    #[arg(long, value_name = "S")]
    addr_stride: Option<u32>,
    /// Directed broadcast address. [broadcast.address]
    #[arg(long, value_name = "IP")]
    broadcast_addr: Option<String>,
    /// UDP port of broadcasts (0 = the destination port). [broadcast.port]
    #[arg(long, value_name = "PORT")]
    broadcast_port: Option<u16>,
    /// Base of the unowned destinations. [unowned.base]
    #[arg(long, value_name = "IP")]
    unowned_base: Option<String>,
    /// Number of unowned destinations. [unowned.count]
    #[arg(long, value_name = "N")]
    unowned_count: Option<u32>,
    /// Shares: KIND=WEIGHT[,KIND=WEIGHT...] over unicast, limited_broadcast,
    /// directed_broadcast, unowned, bad_checksum, truncated, fragment, bad_ihl. [mix.*]
    #[arg(long, value_name = "KIND=W,...")]
    mix: Option<String>,

    /// Print the JSON report on stdout.
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Print the resolved profile (file + overrides) as TOML and exit.
    #[arg(long)]
    print_profile: bool,
}

impl Cli {
    /// The dedicated flags as `--set` overrides, after the explicit `--set`s.
    fn overrides(&self) -> Result<Vec<(String, toml::Value)>, String> {
        let mut o = Vec::new();
        for s in &self.sets {
            o.push(parse_override(s)?);
        }
        let mut put = |k: &str, v: toml::Value| o.push((k.to_string(), v));
        let s = |v: &str| toml::Value::String(v.to_string());
        let i = |v: i64| toml::Value::Integer(v);
        if let Some(v) = self.rate {
            put("run.rate", toml::Value::Float(v));
        }
        if let Some(v) = self.count {
            put("run.count", i(v as i64));
        }
        if let Some(v) = self.duration {
            put("run.duration", toml::Value::Float(v));
        }
        if let Some(v) = self.burst {
            put("run.burst", i(v as i64));
        }
        if let Some(v) = self.drain {
            put("run.drain", toml::Value::Float(v));
        }
        if let Some(v) = self.ring {
            put("run.ring", i(v as i64));
        }
        if self.shuffle {
            put("run.shuffle", toml::Value::Boolean(true));
        }
        if let Some(v) = self.seed {
            put("run.seed", i(v as i64));
        }
        if self.gratuitous_arp {
            put("run.gratuitous_arp", toml::Value::Boolean(true));
        }
        if self.spin {
            put("run.spin", toml::Value::Boolean(true));
        }
        if let Some(v) = &self.dst_mac {
            put("frame.dst_mac", s(v));
        }
        if let Some(v) = &self.src_mac {
            put("frame.src_mac", s(v));
        }
        if let Some(v) = &self.src_ip {
            put("frame.src_ip", s(v));
        }
        if let Some(v) = self.src_port {
            put("frame.src_port", i(v.into()));
        }
        if let Some(v) = self.src_ports {
            put("frame.src_ports", i(v.into()));
        }
        if let Some(v) = self.dst_port {
            put("frame.dst_port", i(v.into()));
        }
        if let Some(v) = self.frame_size {
            put("frame.frame_size", i(v as i64));
        }
        if let Some(v) = self.ttl {
            put("frame.ttl", i(v.into()));
        }
        if self.no_echo {
            put("frame.echo", toml::Value::Boolean(false));
        }
        if let Some(v) = self.namespaces {
            put("unicast.namespaces", i(v.into()));
        }
        if let Some(v) = self.addresses_per_ns {
            put("unicast.addresses_per_namespace", i(v.into()));
        }
        if let Some(v) = &self.addr_base {
            put("unicast.base", s(v));
        }
        if let Some(v) = self.addr_first {
            put("unicast.first", i(v.into()));
        }
        if let Some(v) = self.addr_stride {
            put("unicast.stride", i(v.into()));
        }
        if let Some(v) = &self.broadcast_addr {
            put("broadcast.address", s(v));
        }
        if let Some(v) = self.broadcast_port {
            put("broadcast.port", i(v.into()));
        }
        if let Some(v) = &self.unowned_base {
            put("unowned.base", s(v));
        }
        if let Some(v) = self.unowned_count {
            put("unowned.count", i(v.into()));
        }
        if let Some(m) = &self.mix {
            for part in m.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (k, w) = part
                    .split_once('=')
                    .ok_or_else(|| format!("--mix {part:?}: want KIND=WEIGHT"))?;
                if Kind::from_name(k.trim()).is_none() {
                    let names: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                    return Err(format!(
                        "--mix: unknown kind {k:?} (one of {})",
                        names.join(", ")
                    ));
                }
                put(&format!("mix.{}", k.trim()), toml_value(w.trim()));
            }
        }
        Ok(o)
    }
}

fn main() {
    let cli = Cli::parse();
    match real_main(&cli) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("l3ns-pktgen: error: {e}");
            std::process::exit(1);
        }
    }
}

fn real_main(cli: &Cli) -> Result<(), String> {
    let profile = Profile::load(cli.profile.as_deref(), &cli.overrides()?)?;
    if cli.print_profile {
        print!("{}", profile.to_toml());
        return Ok(());
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("cannot install the handler of signal {sig}: {e}"))?;
    }
    let report = match cli.backend {
        Backend::Memory => run_memory(cli, &profile, &stop)?,
        Backend::Afpacket => run_afpacket(cli, &profile, &stop)?,
        Backend::Dpdk => run_dpdk(cli, &profile, &stop)?,
    };
    if cli.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

fn check_no_other_backend_args(cli: &Cli) -> Result<(), String> {
    let b = cli.backend.name();
    if cli.iface.is_some() && cli.backend != Backend::Afpacket {
        return Err(format!("--iface is for --backend afpacket, not {b}"));
    }
    if (cli.dpdk_args.is_some() || cli.device.is_some()) && cli.backend != Backend::Dpdk {
        return Err(format!(
            "--dpdk-args and --device are for --backend dpdk, not {b}"
        ));
    }
    Ok(())
}

fn run_memory(cli: &Cli, p: &Profile, stop: &AtomicBool) -> Result<Report, String> {
    check_no_other_backend_args(cli)?;
    let info = PortInfo {
        name: "mem0".into(),
        mac: [2, 0, 0, 0, 0, 0x99],
        max_frame: 1514,
    };
    let (mut port, wire) = memory_pair(info, 8192, TxMode::Collect);
    let mut sink = MemorySink::new(wire, p);
    let mut hook = || sink.drain();
    let mut report = run(
        &mut port,
        p,
        RunContext {
            backend: "memory".into(),
            stop,
            after_flush: &mut hook,
            quiet: cli.quiet,
        },
    )?;
    report.sink = Some(sink.counts());
    Ok(report)
}

fn run_afpacket(cli: &Cli, p: &Profile, stop: &AtomicBool) -> Result<Report, String> {
    use l3ns_bench::pktgen::profile::MacSpec;
    use l3ns_dataplane::port::afpacket::{self, AfPacketOptions};
    check_no_other_backend_args(cli)?;
    let iface = cli
        .iface
        .as_deref()
        .ok_or("--backend afpacket needs --iface IF")?;
    let fixed_src = matches!(p.src_mac()?, MacSpec::Fixed(_));
    let opts = AfPacketOptions {
        promiscuous: cli.promiscuous || fixed_src,
        ..AfPacketOptions::default()
    };
    let mut ports = afpacket::open(iface, &opts).map_err(|e| format!("{iface}: {e}"))?;
    let mut port = ports.pop().expect("one queue asked, one port");
    let mut hook = || {};
    let report = run(
        &mut port,
        p,
        RunContext {
            backend: "afpacket".into(),
            stop,
            after_flush: &mut hook,
            quiet: cli.quiet,
        },
    )?;
    let (_, kernel_drops) = port.stats();
    if kernel_drops > 0 && !cli.quiet {
        eprintln!(
            "l3ns-pktgen: the kernel dropped {kernel_drops} received frames (receive ring full)"
        );
    }
    Ok(report)
}

#[cfg(not(feature = "dpdk"))]
fn run_dpdk(_cli: &Cli, _p: &Profile, _stop: &AtomicBool) -> Result<Report, String> {
    Err("this l3ns-pktgen was built without DPDK: cargo build -p l3ns-bench --features dpdk".into())
}

#[cfg(feature = "dpdk")]
fn run_dpdk(cli: &Cli, p: &Profile, stop: &AtomicBool) -> Result<Report, String> {
    use l3ns_dataplane::port::dpdk::{self, DpdkEal, DpdkPortOptions, RxDistribution};
    check_no_other_backend_args(cli)?;
    let args_str = cli
        .dpdk_args
        .as_deref()
        .ok_or("--backend dpdk needs --dpdk-args \"EAL ARGS\" (e.g. --no-pci --in-memory --vdev net_null0)")?;
    let mut args = vec!["l3ns-pktgen".to_string()];
    args.extend(args_str.split_whitespace().map(str::to_string));
    let device = match &cli.device {
        Some(d) => d.clone(),
        None => first_vdev_name(&args).ok_or(
            "--backend dpdk needs --device NAME (no --vdev in --dpdk-args to take it from)",
        )?,
    };
    let eal = DpdkEal::init(&args).map_err(|e| format!("DPDK EAL: {e}"))?;
    let opts = DpdkPortOptions {
        distribution: RxDistribution::Device,
        promiscuous: cli.promiscuous,
        ..DpdkPortOptions::default()
    };
    let mut ports = dpdk::open(&eal, &device, 1, &opts).map_err(|e| format!("{device}: {e}"))?;
    let mut port = ports.pop().expect("one queue asked, one port");
    let mut hook = || {};
    let mut report = run(
        &mut port,
        p,
        RunContext {
            backend: "dpdk".into(),
            stop,
            after_flush: &mut hook,
            quiet: cli.quiet,
        },
    )?;
    report.sent.device_dropped = Some(port.counters().tx_dropped);
    drop(port);
    drop(eal);
    Ok(report)
}

/// The device name of the first `--vdev NAME,...` (or `--vdev=NAME,...`) argument.
#[cfg_attr(not(feature = "dpdk"), allow(dead_code))]
fn first_vdev_name(args: &[String]) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let spec = if a == "--vdev" {
            it.next()?.as_str()
        } else if let Some(s) = a.strip_prefix("--vdev=") {
            s
        } else {
            continue;
        };
        return spec.split(',').next().map(str::to_string);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vdev_name() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            first_vdev_name(&a(&["x", "--no-pci", "--vdev", "net_memif0,role=client"])),
            Some("net_memif0".into())
        );
        assert_eq!(
            first_vdev_name(&a(&["x", "--vdev=net_null1"])),
            Some("net_null1".into())
        );
        assert_eq!(first_vdev_name(&a(&["x", "--no-pci"])), None);
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
