//! Durability through the real binaries: a stream of `addr push`/`addr pull` through
//! `l3nsctl`, `kill -9` of `l3nsd` in the middle of it, a restart on the same state file:
//! every acknowledged change is there, the one in flight is either fully there or not at all,
//! and the model is consistent.

mod cli_harness;

use cli_harness::{l3nsctl, test_dir, Out};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TENANTS: [&str; 4] = ["web1", "web2", "web3", "web4"];
const ADDRS: u8 = 24;

/// A running `l3nsd`, killed (SIGKILL, by its PID) when dropped.
struct L3nsd {
    child: Child,
}

impl L3nsd {
    fn start(dir: &Path) -> L3nsd {
        let log = std::fs::File::create(dir.join("l3nsd.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_l3nsd"))
            .arg("--config")
            .arg(dir.join("l3ns.toml"))
            .arg("--state")
            .arg(dir.join("state.json"))
            .arg("--control")
            .arg(dir.join("ctl.sock"))
            .args(["--metrics", "off", "--quiet"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start l3nsd");
        let d = L3nsd { child };
        let ctl = dir.join("ctl.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if ctl_at(&ctl, &["status"]).code == 0 {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "l3nsd did not answer within 30 s: {}",
                std::fs::read_to_string(dir.join("l3nsd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for L3nsd {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn ctl_at(ctl: &Path, args: &[&str]) -> Out {
    let c = ctl.to_str().unwrap().to_string();
    let mut v = vec!["--control", c.as_str()];
    v.extend_from_slice(args);
    l3nsctl(&v)
}

fn addr(i: u8) -> String {
    format!("10.0.0.{}", 10 + i)
}

fn config(dir: &Path) -> PathBuf {
    let mut s = String::from(
        "[dataplane]\nworkers = 1\nidle_sleep_us = 1000\n\n\
         [[port]]\nname = \"mem0\"\nbackend = \"memory\"\nmac = \"02:00:00:00:00:01\"\n\n",
    );
    for t in TENANTS {
        s.push_str(&format!("[[namespace]]\nname = \"{t}\"\n\n"));
    }
    for i in 0..ADDRS {
        s.push_str(&format!(
            "[[address]]\naddress = \"{}/24\"\ndev = \"mem0\"\n\n",
            addr(i)
        ));
    }
    s.push_str("[metrics]\nlisten = \"off\"\n");
    let p = dir.join("l3ns.toml");
    std::fs::write(&p, s).unwrap();
    p
}

/// address → owner, from `addr show --all`; panics if an address shows up twice.
fn owners(ctl: &Path) -> BTreeMap<String, String> {
    let v = ctl_at(ctl, &["--json", "addr", "show", "--all"]).ok_json();
    let mut m = BTreeMap::new();
    for a in v.as_array().unwrap() {
        let local = a["local"].as_str().unwrap().to_string();
        if local == "127.0.0.1" {
            continue;
        }
        let prev = m.insert(local.clone(), a["owner"].as_str().unwrap().to_string());
        assert!(prev.is_none(), "{local} is listed twice: {v}");
    }
    m
}

/// What the stream knows about one address: the owner after its last acknowledged change,
/// and the owner a change in flight (not acknowledged) would have given it.
#[derive(Clone, Debug)]
struct Known {
    acked: String,
    in_flight: Option<String>,
}

#[test]
fn acknowledged_changes_survive_kill_9() {
    let dir = test_dir("durability");
    config(&dir);
    let ctl = dir.join("ctl.sock");
    let mut daemon = L3nsd::start(&dir);
    let start = owners(&ctl);
    assert_eq!(start.len(), ADDRS as usize);
    assert!(start.values().all(|o| o == "root"));

    let known: Arc<Mutex<BTreeMap<String, Known>>> = Arc::new(Mutex::new(
        start
            .iter()
            .map(|(a, o)| {
                (
                    a.clone(),
                    Known {
                        acked: o.clone(),
                        in_flight: None,
                    },
                )
            })
            .collect(),
    ));
    let acked = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let stream = {
        let (known, acked, done, ctl) = (known.clone(), acked.clone(), done.clone(), ctl.clone());
        std::thread::spawn(move || {
            for step in 0..10_000usize {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                let a = addr((step % ADDRS as usize) as u8);
                let owner = known.lock().unwrap()[&a].acked.clone();
                let (args, next): (Vec<String>, String) = if owner == "root" {
                    let to = TENANTS[(step / ADDRS as usize + step) % TENANTS.len()];
                    (
                        ["addr", "push", a.as_str(), "dev", "mem0", "--to", to]
                            .map(String::from)
                            .to_vec(),
                        to.to_string(),
                    )
                } else {
                    (
                        [
                            "addr",
                            "pull",
                            a.as_str(),
                            "dev",
                            "mem0",
                            "--from",
                            owner.as_str(),
                        ]
                        .map(String::from)
                        .to_vec(),
                        "root".to_string(),
                    )
                };
                known.lock().unwrap().get_mut(&a).unwrap().in_flight = Some(next.clone());
                let argv: Vec<&str> = args.iter().map(String::as_str).collect();
                let out = ctl_at(&ctl, &argv);
                let mut k = known.lock().unwrap();
                let e = k.get_mut(&a).unwrap();
                match out.code {
                    0 => {
                        e.acked = next;
                        e.in_flight = None;
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    // The daemon is gone: the outcome of this one is unknown.
                    2 => return,
                    _ => panic!("a valid change was refused: {out:?}"),
                }
            }
        })
    };

    // Let a good number of changes be acknowledged, then kill -9 in the middle of the stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::SeqCst) < 40 {
        assert!(Instant::now() < deadline, "the stream is too slow");
        std::thread::sleep(Duration::from_millis(5));
    }
    daemon.kill9();
    done.store(true, Ordering::SeqCst);
    stream.join().unwrap();
    let n = acked.load(Ordering::SeqCst);
    assert!(n >= 40);

    // Restart on the same state file (the stale control socket is replaced).
    let _daemon = L3nsd::start(&dir);
    let after = owners(&ctl);
    let known = known.lock().unwrap().clone();
    assert_eq!(after.len(), ADDRS as usize, "no address lost or duplicated");
    let mut uncertain = 0;
    for (a, k) in &known {
        let got = &after[a];
        match &k.in_flight {
            None => assert_eq!(got, &k.acked, "{a}: acknowledged owner {}", k.acked),
            Some(f) => {
                uncertain += 1;
                assert!(
                    got == &k.acked || got == f,
                    "{a}: {got} is neither the acknowledged {} nor the in-flight {f}",
                    k.acked
                );
            }
        }
    }
    assert!(uncertain <= 1, "at most one change was in flight");
    eprintln!("{n} changes acknowledged before kill -9, {uncertain} in flight");

    // The model is consistent: every namespace sees exactly what it owns, and the state
    // (not the configuration, where root owns everything) was loaded.
    let ns: Vec<String> = ctl_at(&ctl, &["--json", "ns", "list"])
        .ok_json()
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ns, ["root", "web1", "web2", "web3", "web4"]);
    for t in ns.iter() {
        let v: Value = ctl_at(&ctl, &["--as", t, "--json", "addr", "show"]).ok_json();
        let mut mine: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["local"].as_str().unwrap().to_string())
            .filter(|a| a != "127.0.0.1")
            .collect();
        mine.sort();
        let mut want: Vec<String> = after
            .iter()
            .filter(|(_, o)| *o == t)
            .map(|(a, _)| a.clone())
            .collect();
        want.sort();
        assert_eq!(mine, want, "{t} sees exactly what it owns");
    }
    assert!(
        after.values().any(|o| o != "root"),
        "state was loaded, not the configuration: {after:?}"
    );
    // And it still takes changes.
    let a = after
        .iter()
        .find(|(_, o)| *o == "root")
        .map(|(a, _)| a.clone());
    if let Some(a) = a {
        ctl_at(
            &ctl,
            &["addr", "push", a.as_str(), "dev", "mem0", "--to", "web1"],
        )
        .ok();
    }
    drop(_daemon);
    let _ = std::fs::remove_dir_all(dir);
}
