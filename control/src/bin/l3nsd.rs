//! `l3nsd`: the l3ns daemon. See `l3nsd --help` and `l3ns_control::daemon`.

use clap::Parser;
use l3ns_control::config::Listen;
use l3ns_control::daemon::{self, Options};
use l3ns_control::heap::{self, HeapMode};
use l3ns_control::limits;
use l3ns_control::stop::Stop;
use std::path::PathBuf;
use std::time::Duration;

/// l3ns daemon: a userspace poll-mode IPv4 dataplane with L3 network namespaces.
///
/// Opens the configured ports, builds the namespaces, addresses and sockets of the
/// configuration (or loads them from --state), runs one pinned worker per configured core and
/// the built-in services (echo, sink, attach:PATH), serves the control API for `l3nsctl` on a
/// unix socket and Prometheus metrics over HTTP, and prints per-namespace counters every
/// second. Stops on SIGINT/SIGTERM or after --duration, writing the state file.
///
/// Without --config it runs the embedded demo (config/demo.toml): a memory port with a
/// built-in traffic generator and three namespaces web1..web3, no root and no NIC needed.
#[derive(Parser, Debug)]
#[command(name = "l3nsd", version, after_help = AFTER_HELP)]
struct Cli {
    /// TOML configuration file (default: the embedded config/demo.toml).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,

    /// State file: loaded instead of the configuration's namespaces, addresses, routes and
    /// sockets when it exists (ports still come from the configuration); rewritten atomically
    /// after every change and at shutdown.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,

    /// Root control socket for l3nsctl (overrides [control] socket; default
    /// /run/l3ns/control.sock for root, $XDG_RUNTIME_DIR/l3ns/control.sock or
    /// /tmp/l3ns-UID/control.sock otherwise).
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,

    /// Prometheus endpoint, ADDR:PORT or "off" (overrides [metrics] listen; default
    /// 127.0.0.1:9469). Port 0 picks a free port, printed at start.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen)]
    metrics: Option<Listen>,

    /// Stop after SECS seconds (fractions allowed) instead of waiting for SIGINT/SIGTERM.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    duration: Option<Duration>,

    /// Check the configuration (and the state file, if given) against the model's rules,
    /// print a summary and exit: 0 when valid, 2 when not. Opens nothing.
    #[arg(long)]
    check: bool,

    /// Print neither the banner nor the per-second table (errors still go to stderr).
    #[arg(long, short = 'q')]
    quiet: bool,

    /// Seconds between two tables.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "1")]
    interval: Duration,

    #[arg(long, value_enum, value_name = "MODE", default_value_t = HeapMode::Thp, help = heap::HELP)]
    heap: HeapMode,
}

const AFTER_HELP: &str = "\
Exit status: 0 after a clean stop (or a valid --check), 2 for a configuration error (the
message names FILE:LINE:COL and the key), 1 for any other failure (a port that cannot be
opened, a damaged state file, a control socket in use).

Examples:
  l3nsd --duration 5                         # the embedded demo for five seconds
  l3nsd --config config/veth.toml --state /var/lib/l3ns/state.json
  l3nsd --config my.toml --check             # validate only
  l3nsctl --control /tmp/l3ns-1000/control.sock ns list";

fn parse_listen(s: &str) -> Result<Listen, String> {
    s.parse()
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("{s:?} is not a non-negative number of seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn main() {
    let cli = Cli::parse();
    // Before anything else (threads, DPDK's EAL): may re-execute the program.
    let heap = heap::apply(cli.heap);
    // Each namespace's tenant socket is a descriptor (see `limits`).
    let nofile = limits::raise_nofile();
    let opts = Options {
        config: cli.config,
        state: cli.state,
        control: cli.control,
        metrics: cli.metrics,
        duration: cli.duration,
        quiet: cli.quiet,
        interval: Some(cli.interval.max(Duration::from_millis(50))),
    };
    if cli.check {
        match daemon::check(&opts) {
            Ok(r) => {
                let m = &r.model;
                println!(
                    "l3nsd: {} is valid: {} port(s), {} namespace(s), {} address(es), {} socket(s){}",
                    r.config.source.file,
                    r.config.ports.len(),
                    m.namespaces().count(),
                    m.ifaddr_count(),
                    m.sockets().count(),
                    if r.from_state { " (from the state file)" } else { "" }
                );
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("l3nsd: error: {e}");
                std::process::exit(e.exit_code());
            }
        }
    }
    // SIGINT and SIGTERM ask for the stop from a thread that sleeps until one comes (the
    // handler only writes to a pipe), which wakes the main thread at once.
    let stop = Stop::new();
    let sigs = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM];
    let watcher = signal_hook::iterator::Signals::new(sigs).and_then(|mut signals| {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("l3ns-signals".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                if signals.forever().next().is_some() {
                    stop.stop();
                }
            })
    });
    if let Err(e) = watcher {
        eprintln!("l3nsd: error: cannot install the handlers of SIGINT and SIGTERM: {e}");
        std::process::exit(1);
    }
    let mut out = std::io::stdout();
    if !cli.quiet {
        println!("l3nsd: {heap}");
        println!("l3nsd: {nofile}");
    } else if matches!(nofile, limits::Nofile::Refused { .. }) {
        eprintln!("l3nsd: {nofile}");
    }
    if let Err(e) = daemon::run(&opts, &stop, &mut out) {
        eprintln!("l3nsd: error: {e}");
        std::process::exit(e.exit_code());
    }
}
