//! `l3nsctl`: the command line of the l3ns control API (DESIGN.md "Interface contract").
//!
//! Every command becomes one [`Request`] sent to `l3nsd` over its unix control socket; the
//! answer is printed as an aligned table, or as the raw reply with `--json`. Exit status:
//! 0 done, 1 the daemon (or the argument check) refused the command — `l3nsctl: ERRNO:
//! sentence` on stderr —, 2 usage error or l3nsd unreachable.

use clap::{Parser, Subcommand, ValueEnum};
use l3ns_control::api::protocol::{
    cidr, AddrView, DevView, NsView, RouteView, SockView, StatsView, StatusView, VersionView,
    WorkerStats,
};
use l3ns_control::api::{call, ClientError, Request};
use l3ns_control::daemon::default_control_path;
use l3ns_control::error::ControlError;
use l3ns_dataplane::counters::NsSnapshot;
use l3ns_dataplane::types::{LoopbackMode, Proto, Scope};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const EXIT_HELP: &str = "\
Exit status: 0 done; 1 the command was refused (stderr: `l3nsctl: ERRNO: sentence`, errno names
as in SEMANTICS.md); 2 usage error, or l3nsd cannot be reached on the control socket.

The root control socket acts as any namespace (--as); a tenant socket
`<control>.tenants/NS.sock` acts only as NS.";

/// Control l3nsd: L3 namespaces, their addresses, routes, sockets and counters.
#[derive(Parser, Debug)]
#[command(name = "l3nsctl", version, after_help = EXIT_HELP)]
struct Cli {
    /// l3nsd's control socket [default: $L3NS_CONTROL, else l3nsd's default:
    /// /run/l3ns/control.sock for root, $XDG_RUNTIME_DIR/l3ns/control.sock or
    /// /tmp/l3ns-UID/control.sock otherwise].
    #[arg(long, global = true, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Run the command with namespace NS's identity and rights; an L3 identity cannot push,
    /// pull, add addresses or routes, or create namespaces (R1-R4). Default: root.
    #[arg(long = "as", global = true, value_name = "NS")]
    as_ns: Option<String>,
    /// Print machine-readable results (`{"ok": ...}`) and errors (`{"error": {...}}`).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create, delete and inspect namespaces (R1, R5).
    #[command(subcommand)]
    Ns(NsCmd),
    /// List the devices the identity can use: its L2 family's ports (R2).
    #[command(subcommand)]
    Dev(DevCmd),
    /// Add, delete, move and show interface addresses (R3, R4, R6).
    #[command(subcommand)]
    Addr(AddrCmd),
    /// Change and list the routes of an L2 namespace (R2).
    #[command(subcommand)]
    Route(RouteCmd),
    /// Bind, list and close sockets served by built-in services (R7).
    #[command(subcommand)]
    Sock(SockCmd),
    /// Show the counters of the namespaces the identity can see, summed over workers (R16)
    ///
    /// For an L2 identity the ports too, and each worker's polls (BUSY: the share that handled
    /// packets; near 100% the worker does not keep up) and the consumer threads it woke
    /// (WAKEUPS: each costs the worker a system call; see README, "Tuning for line rate").
    Stats {
        /// Only this namespace (ENOENT if the identity cannot see it).
        #[arg(long, value_name = "NS")]
        ns: Option<String>,
    },
    /// Live per-namespace rates: packets and bytes per second in and out, deliveries and drops
    /// by reason, busiest first, refreshed every --interval (R16)
    ///
    /// For an L2 identity, each worker's polls per second, busy share and consumer wake-ups
    /// per second below them (in the text frame; --json prints the namespaces' rates).
    Top {
        /// Print one frame (rates over one interval) and exit.
        #[arg(long)]
        once: bool,
        /// Seconds between samples.
        #[arg(long, default_value_t = 1.0, value_name = "SECS")]
        interval: f64,
    },
    /// Show the daemon's version and its owner-table snapshot version.
    Version,
    /// Show the snapshot version, workers, ports and what the identity sees.
    Status,
}

#[derive(Subcommand, Debug)]
enum NsCmd {
    /// Create an L3 child namespace of the identity (or of --parent); only an L2 namespace
    /// with NET_ADMIN may (R1: EPERM, EEXIST, EINVAL for a bad name).
    Add {
        /// 1-32 characters of a-z, 0-9, '_' and '-', starting with a letter or digit.
        name: String,
        /// The L2 parent (default: the identity).
        #[arg(long, value_name = "NS")]
        parent: Option<String>,
        /// isolated: 127.0.0.0/8 stays inside; shared: with no local listener, loopback
        /// traffic goes to the parent's (R11).
        #[arg(long, value_enum, default_value_t = Loopback::Isolated)]
        loopback: Loopback,
        /// Create a nested L2 namespace under root instead (own routes, may have L3
        /// children; only root may, R1).
        #[arg(long)]
        l2: bool,
    },
    /// Delete a namespace: its addresses return to its parent, its sockets close (R5: EBUSY
    /// while it has children, EPERM for root).
    Del { name: String },
    /// List the identity's namespace and, for an L2 identity, its descendants (R6).
    List,
    /// Show one namespace the identity can see (ENOENT otherwise).
    Info { name: String },
}

#[derive(Subcommand, Debug)]
enum DevCmd {
    /// List the devices of the identity's L2 family, `lo` first; an L3 namespace uses its
    /// parent's devices (R2).
    List,
}

#[derive(Subcommand, Debug)]
enum AddrCmd {
    /// Add A.B.C.D/LEN on a device, owned by the identity; L2 with NET_ADMIN only (R3).
    #[command(
        override_usage = "l3nsctl addr add A.B.C.D/LEN dev DEV [label LABEL] [broadcast A.B.C.D] [scope host|link|global]"
    )]
    Add {
        /// The address and prefix length.
        #[arg(value_name = "A.B.C.D/LEN")]
        cidr: String,
        /// dev DEV [label LABEL] [broadcast A.B.C.D] [scope host|link|global]
        #[arg(required = true, value_name = "KEYWORD VALUE")]
        words: Vec<String>,
    },
    /// Delete an address the identity owns; one owned by a child must be pulled first (R3).
    #[command(override_usage = "l3nsctl addr del A.B.C.D dev DEV")]
    Del {
        #[arg(value_name = "A.B.C.D")]
        local: String,
        /// dev DEV
        #[arg(required = true, value_name = "KEYWORD VALUE")]
        words: Vec<String>,
    },
    /// Move an address the identity owns to one of its L3 children; the identity stops
    /// seeing and using it (R4: EPERM, ENODEV, EADDRNOTAVAIL).
    #[command(override_usage = "l3nsctl addr push A.B.C.D dev DEV [label LABEL] --to NS")]
    Push {
        #[arg(value_name = "A.B.C.D")]
        local: String,
        /// dev DEV [label LABEL]
        #[arg(required = true, value_name = "KEYWORD VALUE")]
        words: Vec<String>,
        /// The L3 child that receives the address.
        #[arg(long, value_name = "NS")]
        to: String,
    },
    /// Move an address back from one of the identity's L3 children (R4).
    #[command(override_usage = "l3nsctl addr pull A.B.C.D dev DEV [label LABEL] --from NS")]
    Pull {
        #[arg(value_name = "A.B.C.D")]
        local: String,
        /// dev DEV [label LABEL]
        #[arg(required = true, value_name = "KEYWORD VALUE")]
        words: Vec<String>,
        /// The L3 child that gives the address back.
        #[arg(long, value_name = "NS")]
        from: String,
    },
    /// Show the addresses the identity owns plus 127.0.0.1/8 on lo (R6).
    Show {
        /// Also its descendants' addresses with their owner (L2 only, EPERM for L3).
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand, Debug)]
enum RouteCmd {
    /// Add a route through a gateway, or a connected route without `via`; L2 with NET_ADMIN
    /// only (R2).
    #[command(override_usage = "l3nsctl route add CIDR [via GW] dev DEV [scope host|link|global]")]
    Add {
        #[arg(value_name = "CIDR")]
        cidr: String,
        /// [via GW] dev DEV [scope host|link|global]
        #[arg(required = true, value_name = "KEYWORD VALUE")]
        words: Vec<String>,
    },
    /// Delete an explicit route (R2: ENOENT if there is none).
    Del {
        #[arg(value_name = "CIDR")]
        cidr: String,
    },
    /// List the explicit routes the identity uses: an L3 namespace sees its parent's (R2).
    List,
}

#[derive(Subcommand, Debug)]
enum SockCmd {
    /// Bind a socket in the identity's namespace and start a service on it (R7: the address
    /// must be 0.0.0.0, loopback, broadcast or one the namespace owns, else EADDRNOTAVAIL;
    /// a port taken in the same namespace is EADDRINUSE, other namespaces never conflict).
    #[command(
        override_usage = "l3nsctl sock bind udp A.B.C.D:PORT --service echo|sink|attach:PATH"
    )]
    Bind {
        #[arg(value_enum)]
        proto: ProtoArg,
        #[arg(value_name = "A.B.C.D:PORT")]
        addr: String,
        /// echo answers each datagram from the address it came to; sink counts and drops;
        /// attach:PATH hands datagrams to another process over a unix socket.
        #[arg(long, value_name = "SERVICE")]
        service: String,
    },
    /// List the sockets the identity can see with their queues (depth, overflow).
    List,
    /// Close a socket of the identity's namespace (an L2 may close its descendants').
    Close { id: u32 },
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum Loopback {
    Isolated,
    Shared,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum ProtoArg {
    Udp,
}

/// The connection and output settings of one run.
struct Ctx {
    control: PathBuf,
    as_ns: Option<String>,
    json: bool,
}

impl Ctx {
    fn call(&self, req: &Request) -> Result<Value, ClientError> {
        call(&self.control, self.as_ns.as_deref(), req)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = Ctx {
        control: cli
            .control
            .or_else(|| std::env::var_os("L3NS_CONTROL").map(PathBuf::from))
            .unwrap_or_else(default_control_path),
        as_ns: cli.as_ns,
        json: cli.json,
    };
    match run(&ctx, cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&ctx, &e),
    }
}

/// Prints a failure the contract's way and returns the exit status.
fn report(ctx: &Ctx, e: &ClientError) -> ExitCode {
    let code = match e {
        ClientError::Remote(_) => 1,
        _ => 2,
    };
    if ctx.json {
        let err = match e {
            ClientError::Remote(c) => serde_json::to_value(c).unwrap_or(Value::Null),
            ClientError::Connect { source, .. } | ClientError::Io { source, .. } => {
                serde_json::json!({ "errno": os_errno_name(source), "message": e.to_string() })
            }
            ClientError::Protocol { .. } => {
                serde_json::json!({ "errno": "EPROTO", "message": e.to_string() })
            }
        };
        println!("{}", serde_json::json!({ "error": err }));
    }
    eprintln!("l3nsctl: {e}");
    ExitCode::from(code)
}

fn os_errno_name(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::NotFound => "ENOENT",
        std::io::ErrorKind::PermissionDenied => "EACCES",
        std::io::ErrorKind::ConnectionRefused => "ECONNREFUSED",
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => "ETIMEDOUT",
        _ => "EIO",
    }
}

fn einval(msg: impl Into<String>) -> ClientError {
    ClientError::Remote(ControlError::einval(msg))
}

fn run(ctx: &Ctx, cmd: Cmd) -> Result<(), ClientError> {
    if let Cmd::Top { once, interval } = cmd {
        return top(ctx, once, interval);
    }
    let req = request(cmd)?;
    let value = ctx.call(&req)?;
    if ctx.json {
        println!("{}", serde_json::json!({ "ok": value }));
    } else {
        print!("{}", render(&req, value)?);
    }
    Ok(())
}

/// Turns a command line into a request; malformed arguments are EINVAL.
fn request(cmd: Cmd) -> Result<Request, ClientError> {
    Ok(match cmd {
        Cmd::Ns(NsCmd::Add {
            name,
            parent,
            loopback,
            l2,
        }) => Request::NsAdd {
            name,
            parent,
            l2,
            loopback: match loopback {
                Loopback::Isolated => LoopbackMode::Isolated,
                Loopback::Shared => LoopbackMode::Shared,
            },
        },
        Cmd::Ns(NsCmd::Del { name }) => Request::NsDel { name },
        Cmd::Ns(NsCmd::List) => Request::NsList,
        Cmd::Ns(NsCmd::Info { name }) => Request::NsInfo { name },
        Cmd::Dev(DevCmd::List) => Request::DevList,
        Cmd::Addr(AddrCmd::Add { cidr: c, words }) => {
            if !c.contains('/') {
                return Err(einval(format!(
                    "{c:?} has no prefix length; use A.B.C.D/LEN, e.g. 10.0.0.2/24"
                )));
            }
            let prefix = cidr::parse(&c).map_err(einval)?;
            let mut kw = Keywords::parse(&words, &["dev", "label", "broadcast", "scope"])?;
            Request::AddrAdd {
                local: prefix.addr,
                prefix: prefix.len,
                dev: kw.required("dev")?,
                label: kw.take("label"),
                broadcast: kw.take("broadcast").map(|b| ipv4(&b)).transpose()?,
                scope: kw
                    .take("scope")
                    .map(|s| scope(&s))
                    .transpose()?
                    .unwrap_or_default(),
            }
        }
        Cmd::Addr(AddrCmd::Del { local, words }) => {
            let mut kw = Keywords::parse(&words, &["dev"])?;
            Request::AddrDel {
                local: ipv4(&local)?,
                dev: kw.required("dev")?,
            }
        }
        Cmd::Addr(AddrCmd::Push { local, words, to }) => {
            let mut kw = Keywords::parse(&words, &["dev", "label"])?;
            Request::AddrPush {
                local: ipv4(&local)?,
                dev: kw.required("dev")?,
                label: kw.take("label"),
                to,
            }
        }
        Cmd::Addr(AddrCmd::Pull { local, words, from }) => {
            let mut kw = Keywords::parse(&words, &["dev", "label"])?;
            Request::AddrPull {
                local: ipv4(&local)?,
                dev: kw.required("dev")?,
                label: kw.take("label"),
                from,
            }
        }
        Cmd::Addr(AddrCmd::Show { all }) => Request::AddrShow { all },
        Cmd::Route(RouteCmd::Add { cidr: c, words }) => {
            let mut kw = Keywords::parse(&words, &["via", "dev", "scope"])?;
            Request::RouteAdd {
                dst: cidr::parse(&c).map_err(einval)?,
                via: kw.take("via").map(|g| ipv4(&g)).transpose()?,
                dev: kw.required("dev")?,
                scope: kw.take("scope").map(|s| scope(&s)).transpose()?,
            }
        }
        Cmd::Route(RouteCmd::Del { cidr: c }) => Request::RouteDel {
            dst: cidr::parse(&c).map_err(einval)?,
        },
        Cmd::Route(RouteCmd::List) => Request::RouteList,
        Cmd::Sock(SockCmd::Bind {
            proto: ProtoArg::Udp,
            addr,
            service,
        }) => {
            let sa: SocketAddrV4 = addr.parse().map_err(|_| {
                einval(format!(
                    "{addr:?} is not an address and port; use A.B.C.D:PORT, e.g. 0.0.0.0:53"
                ))
            })?;
            Request::SockBind {
                proto: Proto::Udp,
                addr: *sa.ip(),
                port: sa.port(),
                service,
            }
        }
        Cmd::Sock(SockCmd::List) => Request::SockList,
        Cmd::Sock(SockCmd::Close { id }) => Request::SockClose { id },
        Cmd::Stats { ns } => Request::Stats { ns },
        Cmd::Version => Request::Version,
        Cmd::Status => Request::Status,
        Cmd::Top { .. } => unreachable!("handled by run"),
    })
}

/// iproute-style `keyword value` pairs.
struct Keywords(BTreeMap<String, String>);

impl Keywords {
    fn parse(words: &[String], allowed: &[&str]) -> Result<Self, ClientError> {
        let mut map = BTreeMap::new();
        let mut it = words.iter();
        while let Some(k) = it.next() {
            if !allowed.contains(&k.as_str()) {
                return Err(einval(format!(
                    "unexpected {k:?}; expected one of: {}",
                    allowed.join(", ")
                )));
            }
            let v = it
                .next()
                .ok_or_else(|| einval(format!("{k} needs a value")))?;
            if map.insert(k.clone(), v.clone()).is_some() {
                return Err(einval(format!("{k} is given twice; give it once")));
            }
        }
        Ok(Keywords(map))
    }

    fn take(&mut self, k: &str) -> Option<String> {
        self.0.remove(k)
    }

    fn required(&mut self, k: &str) -> Result<String, ClientError> {
        self.take(k)
            .ok_or_else(|| einval(format!("{k} is missing; add `{k} {}`", k.to_uppercase())))
    }
}

fn ipv4(s: &str) -> Result<Ipv4Addr, ClientError> {
    s.parse()
        .map_err(|_| einval(format!("{s:?} is not an IPv4 address; use A.B.C.D")))
}

fn scope(s: &str) -> Result<Scope, ClientError> {
    match s {
        "host" => Ok(Scope::Host),
        "link" => Ok(Scope::Link),
        "global" => Ok(Scope::Global),
        _ => Err(einval(format!(
            "scope {s:?} is unknown; use host, link or global"
        ))),
    }
}

fn decode<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ClientError> {
    serde_json::from_value(v).map_err(|e| ClientError::Protocol {
        path: PathBuf::from("l3nsd"),
        detail: e.to_string(),
    })
}

fn lower<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

/// The human-readable form of an answer.
fn render(req: &Request, v: Value) -> Result<String, ClientError> {
    Ok(match req {
        Request::NsList => {
            let list: Vec<NsView> = decode(v)?;
            table(
                &[
                    "NAME", "LEVEL", "PARENT", "LOOPBACK", "ADDRS", "SOCKETS", "CHILDREN",
                ],
                list.iter()
                    .map(|n| {
                        vec![
                            n.name.clone(),
                            lower(&n.level).to_uppercase(),
                            n.parent.clone().unwrap_or_else(|| "-".into()),
                            lower(&n.loopback),
                            n.addresses.to_string(),
                            n.sockets.to_string(),
                            n.children.len().to_string(),
                        ]
                    })
                    .collect(),
            )
        }
        Request::NsInfo { .. } => {
            let n: NsView = decode(v)?;
            fields(&[
                ("name", n.name.clone()),
                ("level", lower(&n.level).to_uppercase()),
                ("parent", n.parent.clone().unwrap_or_else(|| "-".into())),
                ("net_admin", n.net_admin.to_string()),
                ("loopback", lower(&n.loopback)),
                ("children", join_or_dash(&n.children)),
                ("addresses", n.addresses.to_string()),
                ("sockets", n.sockets.to_string()),
            ])
        }
        Request::DevList => {
            let list: Vec<DevView> = decode(v)?;
            table(
                &["NAME", "MAC", "NAMESPACE"],
                list.into_iter()
                    .map(|d| vec![d.name, d.mac, d.namespace])
                    .collect(),
            )
        }
        Request::AddrShow { all } => {
            let list: Vec<AddrView> = decode(v)?;
            let mut head = vec!["LABEL", "ADDRESS", "BROADCAST", "SCOPE", "DEV"];
            if *all {
                head.push("OWNER");
            }
            table(
                &head,
                list.into_iter()
                    .map(|a| {
                        let mut row = vec![
                            a.label,
                            format!("{}/{}", a.local, a.prefix),
                            a.broadcast.to_string(),
                            lower(&a.scope),
                            a.dev,
                        ];
                        if *all {
                            row.push(a.owner);
                        }
                        row
                    })
                    .collect(),
            )
        }
        Request::RouteList => {
            let list: Vec<RouteView> = decode(v)?;
            table(
                &["DESTINATION", "VIA", "DEV", "SCOPE"],
                list.into_iter()
                    .map(|r| {
                        vec![
                            r.dst.to_string(),
                            r.via.map_or_else(|| "-".into(), |g| g.to_string()),
                            r.dev,
                            lower(&r.scope),
                        ]
                    })
                    .collect(),
            )
        }
        Request::SockList => {
            let list: Vec<SockView> = decode(v)?;
            sock_table(&list)
        }
        Request::SockBind { .. } => {
            let s: SockView = decode(v)?;
            format!(
                "socket {}: {} {}:{} in {}, service {}\n",
                s.id,
                lower(&s.proto),
                s.addr,
                s.port,
                s.namespace,
                s.service
            )
        }
        Request::Stats { .. } => {
            let s: StatsView = decode(v)?;
            stats_tables(&s)
        }
        Request::Version => {
            let s: VersionView = decode(v)?;
            format!(
                "l3nsctl {}\nl3nsd {}, snapshot version {}\n",
                env!("CARGO_PKG_VERSION"),
                s.version,
                s.snapshot_version
            )
        }
        Request::Status => {
            let s: StatusView = decode(v)?;
            fields(&[
                ("identity", s.identity),
                ("version", s.version),
                ("snapshot_version", s.snapshot_version.to_string()),
                ("workers", s.workers.to_string()),
                ("ports", join_or_dash(&s.ports)),
                ("namespaces", s.namespaces.to_string()),
                ("sockets", s.sockets.to_string()),
            ])
        }
        // Changes print nothing on success, as `ip` does; `--json` shows what changed.
        _ => String::new(),
    })
}

fn join_or_dash(v: &[String]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.join(", ")
    }
}

fn sock_table(list: &[SockView]) -> String {
    table(
        &[
            "ID",
            "NAMESPACE",
            "PROTO",
            "ADDRESS",
            "PORT",
            "SERVICE",
            "QUEUED",
            "DEPTH",
            "HIGH",
            "OVERFLOW",
            "RECEIVED",
        ],
        list.iter()
            .map(|s| {
                vec![
                    s.id.to_string(),
                    s.namespace.clone(),
                    lower(&s.proto),
                    s.addr.to_string(),
                    s.port.to_string(),
                    s.service.clone(),
                    s.queued.to_string(),
                    s.depth.to_string(),
                    s.high_water.to_string(),
                    s.overflow.to_string(),
                    s.received.to_string(),
                ]
            })
            .collect(),
    )
}

fn stats_tables(s: &StatsView) -> String {
    let mut out = table(
        &[
            "NAMESPACE",
            "RX_PKTS",
            "RX_BYTES",
            "DELIVERED",
            "BCAST",
            "NO_SOCKET",
            "QUEUE_FULL",
            "NS_GONE",
            "TX_PKTS",
            "TX_BYTES",
            "SPOOFED",
            "ECHO",
        ],
        s.namespaces
            .iter()
            .map(|n| {
                let c = &n.counters;
                let mut row = vec![n.namespace.clone()];
                row.extend(
                    [
                        c.rx_packets,
                        c.rx_bytes,
                        c.delivered,
                        c.broadcast_delivered,
                        c.dropped_no_socket,
                        c.dropped_queue_full,
                        c.dropped_ns_gone,
                        c.tx_packets,
                        c.tx_bytes,
                        c.tx_spoofed,
                        c.icmp_echo_replied,
                    ]
                    .map(|x| x.to_string()),
                );
                row
            })
            .collect(),
    );
    if let Some(ports) = &s.ports {
        out.push('\n');
        out.push_str(&table(
            &[
                "PORT", "RX_PKTS", "RX_BYTES", "TX_PKTS", "TX_BYTES", "DROPPED",
            ],
            ports
                .iter()
                .map(|p| {
                    let drops: Vec<String> =
                        p.dropped.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    vec![
                        p.port.clone(),
                        p.rx_packets.to_string(),
                        p.rx_bytes.to_string(),
                        p.tx_packets.to_string(),
                        p.tx_bytes.to_string(),
                        join_or_dash(&drops),
                    ]
                })
                .collect(),
        ));
    }
    if let Some(workers) = &s.workers {
        out.push('\n');
        out.push_str(&table(
            &["WORKER", "BUSY_POLLS", "IDLE_POLLS", "BUSY", "WAKEUPS"],
            workers
                .iter()
                .map(|w| {
                    vec![
                        w.worker.to_string(),
                        w.busy_polls.to_string(),
                        w.idle_polls.to_string(),
                        percent(busy_share(w.busy_polls, w.idle_polls)),
                        w.consumer_wakeups.to_string(),
                    ]
                })
                .collect(),
        ));
    }
    out
}

/// `key: value` lines, keys aligned.
fn fields(kv: &[(&str, String)]) -> String {
    let w = kv.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    kv.iter()
        .map(|(k, v)| format!("{:<w$} {v}\n", format!("{k}:")))
        .collect()
}

/// `12`, `3.5`, `45.2k`: a count or a rate (an address like `10.0.0.1` is not).
fn is_number(c: &str) -> bool {
    let digits = c.strip_suffix(['k', 'M', 'G']).unwrap_or(c);
    !digits.is_empty() && digits.parse::<f64>().is_ok()
}

/// An aligned table; a column whose cells are all numbers is right-aligned.
fn table(head: &[&str], rows: Vec<Vec<String>>) -> String {
    let n = head.len();
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    let mut numeric = vec![true; n];
    for r in &rows {
        for (i, c) in r.iter().enumerate().take(n) {
            width[i] = width[i].max(c.chars().count());
            numeric[i] &= is_number(c);
        }
    }
    let line = |cells: Vec<&str>, numeric: &[bool]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = width[i];
            let last = i + 1 == n;
            if numeric[i] {
                s.push_str(&format!("{c:>w$}"));
            } else if last {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}"));
            }
            if !last {
                s.push_str("  ");
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(head.to_vec(), &numeric);
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect(), &numeric));
    }
    out
}

// ----- top ------------------------------------------------------------------------------------

/// One namespace's rates over one interval, per second.
#[derive(Clone, Debug, serde::Serialize)]
struct Rates {
    namespace: String,
    rx_pps: f64,
    rx_bps: f64,
    tx_pps: f64,
    tx_bps: f64,
    delivered_ps: f64,
    broadcast_ps: f64,
    no_socket_ps: f64,
    queue_full_ps: f64,
    ns_gone_ps: f64,
    tx_spoofed_ps: f64,
}

/// Rates between two `stats` samples `dt` apart, busiest first. A namespace absent from the
/// first sample counts from zero; counters never go back, but a namespace deleted and made
/// again under the same name could, so differences saturate at 0.
fn rates(before: &StatsView, after: &StatsView, dt: Duration) -> Vec<Rates> {
    let secs = dt.as_secs_f64().max(1e-3);
    let prev: BTreeMap<&str, &NsSnapshot> = before
        .namespaces
        .iter()
        .map(|n| (n.namespace.as_str(), &n.counters))
        .collect();
    let zero = NsSnapshot::default();
    let mut v: Vec<Rates> = after
        .namespaces
        .iter()
        .map(|n| {
            let a = &n.counters;
            let b = prev.get(n.namespace.as_str()).copied().unwrap_or(&zero);
            let r = |x: u64, y: u64| x.saturating_sub(y) as f64 / secs;
            Rates {
                namespace: n.namespace.clone(),
                rx_pps: r(a.rx_packets, b.rx_packets),
                rx_bps: r(a.rx_bytes, b.rx_bytes),
                tx_pps: r(a.tx_packets, b.tx_packets),
                tx_bps: r(a.tx_bytes, b.tx_bytes),
                delivered_ps: r(a.delivered, b.delivered),
                broadcast_ps: r(a.broadcast_delivered, b.broadcast_delivered),
                no_socket_ps: r(a.dropped_no_socket, b.dropped_no_socket),
                queue_full_ps: r(a.dropped_queue_full, b.dropped_queue_full),
                ns_gone_ps: r(a.dropped_ns_gone, b.dropped_ns_gone),
                tx_spoofed_ps: r(a.tx_spoofed, b.tx_spoofed),
            }
        })
        .collect();
    v.sort_by(|x, y| {
        let t = |r: &Rates| (r.rx_pps + r.tx_pps, r.rx_bps + r.tx_bps);
        t(y).partial_cmp(&t(x))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| x.namespace.cmp(&y.namespace))
    });
    v
}

/// The share of `busy + idle` polls that were busy (None: no poll).
fn busy_share(busy: u64, idle: u64) -> Option<f64> {
    (busy + idle > 0).then(|| busy as f64 / (busy + idle) as f64)
}

/// 0.123 → "12.3%", None → "-".
fn percent(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{:.1}%", x * 100.0))
}

/// One worker's poll and wake-up rates over one interval (an L2 identity's `stats` only).
#[derive(Clone, Debug, PartialEq)]
struct WorkerRates {
    worker: usize,
    polls_ps: f64,
    /// Share of the interval's polls that handled packets (None: no poll).
    busy: Option<f64>,
    wakeups_ps: f64,
}

/// Worker rates between two `stats` samples `dt` apart (none unless both have workers).
fn worker_rates(before: &StatsView, after: &StatsView, dt: Duration) -> Vec<WorkerRates> {
    let secs = dt.as_secs_f64().max(1e-3);
    let (Some(b), Some(a)) = (&before.workers, &after.workers) else {
        return Vec::new();
    };
    a.iter()
        .map(|w| {
            let p = b.iter().find(|x| x.worker == w.worker);
            let d = |f: fn(&WorkerStats) -> u64| f(w).saturating_sub(p.map_or(0, f));
            let (busy, idle) = (d(|x| x.busy_polls), d(|x| x.idle_polls));
            WorkerRates {
                worker: w.worker,
                polls_ps: (busy + idle) as f64 / secs,
                busy: busy_share(busy, idle),
                wakeups_ps: d(|x| x.consumer_wakeups) as f64 / secs,
            }
        })
        .collect()
}

/// 1234567.0 → "1.2M".
fn si(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.1}G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn top_frame(rows: &[Rates], workers: &[WorkerRates], interval: Duration) -> String {
    let mut out = format!(
        "l3ns top: {} namespaces, rates per second over {:.1}s\n",
        rows.len(),
        interval.as_secs_f64()
    );
    out.push_str(&table(
        &[
            "NAMESPACE",
            "RX_PPS",
            "RX_B/S",
            "TX_PPS",
            "TX_B/S",
            "DELIV/S",
            "BCAST/S",
            "NO_SOCK/S",
            "QFULL/S",
            "GONE/S",
            "SPOOF/S",
        ],
        rows.iter()
            .map(|r| {
                vec![
                    r.namespace.clone(),
                    si(r.rx_pps),
                    si(r.rx_bps),
                    si(r.tx_pps),
                    si(r.tx_bps),
                    si(r.delivered_ps),
                    si(r.broadcast_ps),
                    si(r.no_socket_ps),
                    si(r.queue_full_ps),
                    si(r.ns_gone_ps),
                    si(r.tx_spoofed_ps),
                ]
            })
            .collect(),
    ));
    if !workers.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &["WORKER", "POLLS/S", "BUSY", "WAKEUPS/S"],
            workers
                .iter()
                .map(|w| {
                    vec![
                        w.worker.to_string(),
                        si(w.polls_ps),
                        percent(w.busy),
                        si(w.wakeups_ps),
                    ]
                })
                .collect(),
        ));
    }
    out
}

/// `top`: samples `stats` every interval and prints rates; `--once` prints one frame.
fn top(ctx: &Ctx, once: bool, interval: f64) -> Result<(), ClientError> {
    if !(interval.is_finite() && (0.05..=3600.0).contains(&interval)) {
        return Err(einval(format!(
            "interval {interval} is out of range; use 0.05 to 3600 seconds"
        )));
    }
    let interval = Duration::from_secs_f64(interval);
    let sample = || -> Result<(StatsView, Instant), ClientError> {
        let v = ctx.call(&Request::Stats { ns: None })?;
        Ok((decode(v)?, Instant::now()))
    };
    let (mut prev, mut t0) = sample()?;
    loop {
        std::thread::sleep(interval);
        let (cur, t1) = sample()?;
        let rows = rates(&prev, &cur, t1 - t0);
        let workers = worker_rates(&prev, &cur, t1 - t0);
        let mut stdout = std::io::stdout().lock();
        let written = if ctx.json {
            writeln!(stdout, "{}", serde_json::json!({ "ok": rows }))
        } else if once {
            write!(stdout, "{}", top_frame(&rows, &workers, t1 - t0))
        } else {
            // Home the cursor and clear the screen, then draw the frame.
            write!(
                stdout,
                "\x1b[H\x1b[2J{}",
                top_frame(&rows, &workers, t1 - t0)
            )
        };
        let _ = written.and_then(|()| stdout.flush());
        if once {
            return Ok(());
        }
        (prev, t0) = (cur, t1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use l3ns_control::api::protocol::NsStats;

    fn view(name: &str, rx: u64, bytes: u64) -> StatsView {
        StatsView {
            namespaces: vec![NsStats {
                namespace: name.into(),
                counters: NsSnapshot {
                    rx_packets: rx,
                    rx_bytes: bytes,
                    ..Default::default()
                },
            }],
            ports: None,
            workers: None,
        }
    }

    #[test]
    fn worker_rates_are_differences_per_second_with_the_busy_share() {
        let w = |busy, idle, wakeups| {
            let mut v = view("root", 0, 0);
            v.workers = Some(vec![WorkerStats {
                worker: 0,
                busy_polls: busy,
                idle_polls: idle,
                consumer_wakeups: wakeups,
            }]);
            v
        };
        let r = worker_rates(&w(10, 90, 5), &w(310, 290, 105), Duration::from_secs(2));
        assert_eq!(
            r,
            [WorkerRates {
                worker: 0,
                polls_ps: 250.0,
                busy: Some(0.6),
                wakeups_ps: 50.0,
            }]
        );
        // No poll in the interval: no share; an L3 identity's stats have no workers.
        let r = worker_rates(&w(1, 1, 0), &w(1, 1, 0), Duration::from_secs(1));
        assert_eq!(r[0].busy, None);
        assert!(worker_rates(&view("a", 0, 0), &w(1, 1, 0), Duration::from_secs(1)).is_empty());
        let frame = top_frame(&[], &r, Duration::from_secs(1));
        assert!(
            frame.contains("WORKER") && frame.contains("WAKEUPS/S"),
            "{frame}"
        );
    }

    #[test]
    fn rates_are_differences_per_second_busiest_first() {
        let mut a = view("quiet", 10, 100);
        a.namespaces.extend(view("busy", 0, 0).namespaces);
        let mut b = view("quiet", 12, 120);
        b.namespaces.extend(view("busy", 400, 40_000).namespaces);
        b.namespaces.extend(view("new", 2, 20).namespaces);
        let r = rates(&a, &b, Duration::from_secs(2));
        let names: Vec<&str> = r.iter().map(|x| x.namespace.as_str()).collect();
        assert_eq!(names, ["busy", "new", "quiet"]);
        assert_eq!(r[0].rx_pps, 200.0);
        assert_eq!(r[0].rx_bps, 20_000.0);
        assert_eq!(r[2].rx_pps, 1.0);
    }

    #[test]
    fn keywords_parse_pairs_and_reject_the_rest() {
        let w = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let mut k = Keywords::parse(&w("dev eth0 label eth0:1"), &["dev", "label"]).unwrap();
        assert_eq!(k.required("dev").unwrap(), "eth0");
        assert_eq!(k.take("label").as_deref(), Some("eth0:1"));
        assert!(Keywords::parse(&w("dev"), &["dev"]).is_err());
        assert!(Keywords::parse(&w("dev a dev b"), &["dev"]).is_err());
        assert!(Keywords::parse(&w("via 1.2.3.4"), &["dev"]).is_err());
    }

    #[test]
    fn tables_align_and_right_align_numbers() {
        let t = table(
            &["NAME", "N"],
            vec![
                vec!["a".into(), "5".into()],
                vec!["long".into(), "100".into()],
            ],
        );
        assert_eq!(t, "NAME    N\na       5\nlong  100\n");
        let t = table(
            &["ADDR", "RATE"],
            vec![
                vec!["10.0.0.1".into(), "45.2k".into()],
                vec!["127.0.0.1".into(), "7".into()],
            ],
        );
        assert_eq!(t, "ADDR        RATE\n10.0.0.1   45.2k\n127.0.0.1      7\n");
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
