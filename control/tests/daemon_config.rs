//! Bad configurations: each is a clear error naming the file, the line and column, and the
//! key, and saying what is expected; rule errors carry the model's errno and sentence. The
//! binary refuses them with exit status 2.

mod daemon_util;

use daemon_util::*;
use l3ns_control::config::{Config, ConfigError};
use l3ns_dataplane::Errno;
use std::time::Duration;

/// Line (1-based) of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle in text")
        + 1
}

/// Parses and builds `text` as FILE, expecting an error at the line containing `at` about
/// `key`, whose message contains every string of `says`.
fn expect_error(text: &str, at: &str, key: &str, says: &[&str]) -> ConfigError {
    let parsed = Config::parse("bad.toml", text);
    let err = match parsed {
        Err(e) => e,
        Ok(c) => c
            .build_model(&[])
            .expect_err("the configuration must be refused"),
    };
    let shown = err.to_string();
    let want_line = line_of(text, at);
    assert!(
        shown.starts_with(&format!("bad.toml:{want_line}:")),
        "wrong place, want line {want_line}: {shown}"
    );
    assert!(
        shown.contains(&format!("key `{key}`")),
        "wrong key, want {key}: {shown}"
    );
    for s in says {
        assert!(shown.contains(s), "message lacks {s:?}: {shown}");
    }
    err
}

fn errno(e: &ConfigError) -> Option<Errno> {
    match e {
        ConfigError::At { errno, .. } => errno.as_ref().map(|e| e.errno),
        ConfigError::Read { .. } => None,
    }
}

#[test]
fn unknown_key_names_it_and_lists_the_expected_ones() {
    let text = "[dataplane]\nworkers = 1\nworkerz = 2\n";
    expect_error(
        text,
        "workerz",
        "dataplane.workerz",
        &["unknown field `workerz`", "expected one of", "`workers`"],
    );
    let text = base_config("\n[[socket]]\nnamespace = \"root\"\nbind = \"0.0.0.0:7\"\nservice = \"echo\"\ncolor = \"red\"\n");
    expect_error(
        &text,
        "color",
        "socket.color",
        &["unknown field `color`", "`service`"],
    );
    let text = "[metrix]\nlisten = \"off\"\n";
    expect_error(
        text,
        "[metrix]",
        "metrix",
        &["unknown field `metrix`", "`metrics`"],
    );
}

#[test]
fn wrong_type_says_what_is_expected() {
    let text = "[dataplane]\nburst = \"big\"\n";
    expect_error(
        text,
        "burst",
        "dataplane.burst",
        &["invalid type", "expected"],
    );
    let text = "[dataplane]\nworkers = \"two\"\n";
    expect_error(
        text,
        "workers",
        "dataplane.workers",
        &["a number of workers", "list of core ids"],
    );
    let text = base_config("\n[[address]]\naddress = \"10.0.0.2/40\"\ndev = \"mem0\"\n");
    expect_error(&text, "10.0.0.2/40", "address.address", &["A.B.C.D/LEN"]);
    let text = "[[port]]\nname = \"p\"\nbackend = \"xdp\"\n";
    expect_error(
        text,
        "xdp",
        "port.backend",
        &["unknown variant `xdp`", "`memory`", "`afpacket`", "`dpdk`"],
    );
    let text = base_config("\n[[socket]]\nbind = \"0.0.0.0\"\nservice = \"echo\"\n");
    expect_error(&text, "bind = ", "socket.bind", &["A.B.C.D:PORT"]);
}

#[test]
fn unknown_namespace_in_an_address_is_the_models_enoent() {
    let text = base_config("\n[[namespace]]\nname = \"web1\"\n\n[[address]]\naddress = \"10.0.0.2/24\"\ndev = \"mem0\"\nassign_to = \"web9\"\n");
    let e = expect_error(&text, "web9", "address.assign_to", &["ENOENT", "web9"]);
    assert_eq!(errno(&e), Some(Errno::ENOENT));
    // A socket in an unknown namespace, likewise.
    let text = base_config(
        "\n[[socket]]\nnamespace = \"nope\"\nbind = \"0.0.0.0:7\"\nservice = \"echo\"\n",
    );
    let e = expect_error(&text, "\"nope\"", "socket.namespace", &["ENOENT", "nope"]);
    assert_eq!(errno(&e), Some(Errno::ENOENT));
}

#[test]
fn binding_an_address_another_namespace_owns_is_eaddrnotavail() {
    let text = base_config(
        r#"
[[namespace]]
name = "web1"

[[namespace]]
name = "web2"

[[address]]
address = "10.0.0.2/24"
dev = "mem0"
assign_to = "web1"

[[socket]]
namespace = "web2"
bind = "10.0.0.2:7"
service = "echo"
"#,
    );
    let e = expect_error(
        &text,
        "10.0.0.2:7",
        "socket.bind",
        &["EADDRNOTAVAIL", "web2", "10.0.0.2", "(R7)"],
    );
    assert_eq!(errno(&e), Some(Errno::EADDRNOTAVAIL));
}

#[test]
fn duplicate_names_are_eexist_at_the_second_entry() {
    let text =
        base_config("\n[[namespace]]\nname = \"web1\"\n\n[[namespace]]\nname = \"web1\" # again\n");
    let e = expect_error(&text, "# again", "namespace.name", &["EEXIST", "web1"]);
    assert_eq!(errno(&e), Some(Errno::EEXIST));
    let text = "[[port]]\nname = \"mem0\"\nbackend = \"memory\"\n\n[[port]]\nname = \"mem0\" # again\nbackend = \"memory\"\n";
    let e = expect_error(text, "# again", "port.name", &["EEXIST", "mem0"]);
    assert_eq!(errno(&e), Some(Errno::EEXIST));
    let text = base_config("\n[[address]]\naddress = \"10.0.0.1/24\" # again\ndev = \"mem0\"\n");
    expect_error(&text, "# again", "address.address", &["EEXIST", "10.0.0.1"]);
    let text = base_config("\n[[socket]]\nbind = \"0.0.0.0:7\"\nservice = \"echo\"\n\n[[socket]]\nbind = \"10.0.0.1:7\" # again\nservice = \"sink\"\n");
    expect_error(&text, "# again", "socket.bind", &["EADDRINUSE"]);
}

#[test]
fn unknown_device_is_enodev() {
    let text = base_config("\n[[address]]\naddress = \"10.0.0.2/24\"\ndev = \"eth9\"\n");
    let e = expect_error(&text, "eth9", "address.dev", &["ENODEV", "eth9"]);
    assert_eq!(errno(&e), Some(Errno::ENODEV));
    let text = base_config(
        "\n[[route]]\ndst = \"192.168.0.0/16\"\nvia = \"10.0.0.254\"\ndev = \"eth9\"\n",
    );
    expect_error(&text, "eth9", "route.dev", &["ENODEV"]);
}

#[test]
fn structural_checks_name_the_key() {
    let text = "[[port]]\nname = \"p\"\nbackend = \"afpacket\"\n";
    expect_error(text, "afpacket", "port.iface", &["iface"]);
    let text =
        "[dataplane]\nworkers = 2\n\n[[port]]\nname = \"p\"\nbackend = \"memory\"\nqueues = 3\n";
    expect_error(text, "queues", "port.queues", &["expected queues = 2"]);
    let text = base_config("\n[[socket]]\nbind = \"0.0.0.0:7\"\nservice = \"http\"\n");
    expect_error(
        &text,
        "http",
        "socket.service",
        &["EINVAL", "echo, sink or attach:PATH"],
    );
}

/// The flags of a real run (not `--check`) that stops by itself and touches nothing outside
/// `dir`.
fn run_args(dir: &TempDir) -> Vec<String> {
    let control = dir.path("c.sock").to_str().unwrap().to_string();
    ["--duration", "5", "--metrics", "off", "--control", &control]
        .map(String::from)
        .to_vec()
}

#[test]
fn the_binary_refuses_each_kind_with_exit_status_2() {
    let dir = TempDir::new("badcfg");
    let cases: Vec<(&str, String, &str)> = vec![
        ("unknown_key", "[dataplane]\nworkerz = 2\n".to_string(), "dataplane.workerz"),
        ("wrong_type", "[dataplane]\nburst = \"big\"\n".to_string(), "dataplane.burst"),
        (
            "unknown_ns",
            base_config("\n[[address]]\naddress = \"10.0.0.2/24\"\ndev = \"mem0\"\nassign_to = \"web9\"\n"),
            "address.assign_to",
        ),
        (
            "foreign_bind",
            base_config("\n[[namespace]]\nname = \"a\"\n\n[[namespace]]\nname = \"b\"\n\n[[address]]\naddress = \"10.0.0.2/24\"\ndev = \"mem0\"\nassign_to = \"a\"\n\n[[socket]]\nnamespace = \"b\"\nbind = \"10.0.0.2:7\"\nservice = \"echo\"\n"),
            "socket.bind",
        ),
        ("duplicate", base_config("\n[[namespace]]\nname = \"a\"\n\n[[namespace]]\nname = \"a\"\n"), "namespace.name"),
    ];
    for (name, body, key) in &cases {
        let file = dir.path(&format!("{name}.toml"));
        std::fs::write(&file, body).unwrap();
        let f = file.to_str().unwrap();
        for extra in [vec!["--check".to_string()], run_args(&dir)] {
            let mut args = vec!["--config", f];
            args.extend(extra.iter().map(String::as_str));
            let out = l3nsd(&args, Duration::from_secs(30));
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name} {extra:?}: {err}");
            assert!(
                err.contains(&format!("{f}:")) && err.contains(&format!("key `{key}`")),
                "{name}: {err}"
            );
        }
    }
    // A file that is not there.
    let out = l3nsd(
        &[
            "--config",
            dir.path("missing.toml").to_str().unwrap(),
            "--check",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing.toml: cannot read"));
}

#[test]
fn the_embedded_demo_checks() {
    let out = l3nsd(&["--check"], Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("is valid"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn shipped_example_configs_check() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../config");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            n += 1;
            let c = Config::load(&p).unwrap_or_else(|e| panic!("{e}"));
            c.build_model(&[]).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    assert!(n >= 1);
}

/// A DPDK port gets one queue per worker; a driver that cannot spread frames over queues by
/// address (memif has no RSS) is refused with what to change in the configuration, not with
/// the dataplane API's advice.
#[cfg(feature = "dpdk")]
#[test]
fn a_dpdk_port_without_rss_and_two_workers_is_refused_naming_workers() {
    let dir = TempDir::new("dpdk2w");
    let pid = std::process::id();
    let sock = dir.path("m.sock");
    let file = dir.path("l3nsd.toml");
    std::fs::write(
        &file,
        format!(
            r#"[dataplane]
workers = 2
eal_args = ["--no-huge", "-m", "128", "--no-pci", "--file-prefix", "l3ns-2w-{pid}", "-l", "0", "--log-level", "lib.eal:error"]

[[port]]
name = "memif0"
backend = "dpdk"
dpdk_args = "net_memif{pid},role=server,socket={}"

[[address]]
address = "10.0.0.1/24"
dev = "memif0"
"#,
            sock.display()
        ),
    )
    .unwrap();
    let mut args = vec!["--config", file.to_str().unwrap()];
    let run = run_args(&dir);
    args.extend(run.iter().map(String::as_str));
    let out = l3nsd(&args, Duration::from_secs(60));
    let err = text(&out.stderr);
    assert!(!out.status.success(), "l3nsd must refuse the port: {err}");
    for s in [
        "port memif0",
        "net_memif",
        "one queue per worker (2 workers)",
        "no RSS",
        "`[dataplane] workers = 1`",
    ] {
        assert!(err.contains(s), "message lacks {s:?}: {err}");
    }
    assert!(!err.contains("RxDistribution"), "API advice shown: {err}");
}
