//! A control-API daemon inside the test process, driven only through the real `l3nsctl`
//! binary: a `Runtime` with one memory-port device `eth0` (worker running, so counters move),
//! `serve` on a private socket, a recording `ServiceHost`, and a JSON state file written by the
//! persist hook.
#![allow(dead_code)]

use etherparse::PacketBuilder;
use l3ns_control::api::{serve, ServeConfig, ServiceHost};
use l3ns_control::error::ControlError;
use l3ns_control::model::Model;
use l3ns_control::runtime::Runtime;
use l3ns_control::stop::Stop;
use l3ns_dataplane::port::memory::{memory_pair, MemoryWire, TxMode};
use l3ns_dataplane::port::PortInfo;
use l3ns_dataplane::types::SocketId;
use l3ns_dataplane::worker::{Worker, WorkerConfig, WorkerPort};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
pub const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 99);
/// Every `l3nsctl` run is killed after this long.
const CTL_DEADLINE: Duration = Duration::from_secs(20);

/// A private directory per test: `<tmp>/l3ns-cli-<pid>-<test>`, emptied first.
pub fn test_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("l3ns-cli-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create the test directory");
    d
}

/// Records what the control thread asked of it; refuses services whose name contains
/// `refuse` (to test that a failed start undoes the bind).
pub struct RecordingHost {
    pub events: Arc<Mutex<Vec<String>>>,
}

impl ServiceHost for RecordingHost {
    fn start(&mut self, rt: &Runtime, id: SocketId, service: &str) -> Result<(), ControlError> {
        if service.contains("refuse") {
            return Err(ControlError::enoent(format!(
                "service {service} cannot start: nothing listens on its path"
            )));
        }
        rt.socket_handle(id)?;
        self.events
            .lock()
            .unwrap()
            .push(format!("start {} {service}", id.0));
        Ok(())
    }
    fn stop(&mut self, id: SocketId) {
        self.events.lock().unwrap().push(format!("stop {}", id.0));
    }
}

/// What one `l3nsctl` run printed and returned.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub args: Vec<String>,
}

impl Out {
    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "l3nsctl {:?} failed: {self:?}", self.args);
        &self.stdout
    }

    /// Asserts exit 1 with exactly one stderr line `l3nsctl: ERRNO: sentence`; returns the
    /// sentence.
    #[track_caller]
    pub fn errno(&self, errno: &str) -> &str {
        assert_eq!(
            self.code, 1,
            "l3nsctl {:?} should fail with {errno}: {self:?}",
            self.args
        );
        let prefix = format!("l3nsctl: {errno}: ");
        assert!(
            self.stderr.starts_with(&prefix),
            "l3nsctl {:?}: stderr should start with {prefix:?}: {self:?}",
            self.args
        );
        assert_eq!(self.stderr.lines().count(), 1, "one stderr line: {self:?}");
        let sentence = self.stderr[prefix.len()..].trim_end();
        assert!(
            sentence.len() > 10,
            "a sentence says what was wrong: {self:?}"
        );
        sentence
    }

    /// The JSON stdout (`--json`), parsed.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout of {:?} is not JSON ({e}): {self:?}", self.args))
    }

    /// The `ok` value of a successful `--json` run.
    #[track_caller]
    pub fn ok_json(&self) -> Value {
        self.ok();
        let v = self.json();
        v.get("ok")
            .cloned()
            .unwrap_or_else(|| panic!("no \"ok\" in {v}"))
    }
}

/// Runs `l3nsctl ARGS` with a deadline.
pub fn l3nsctl(args: &[&str]) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_l3nsctl"))
        .args(args)
        .env_remove("L3NS_CONTROL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start l3nsctl");
    let deadline = Instant::now() + CTL_DEADLINE;
    loop {
        if child.try_wait().expect("wait for l3nsctl").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("l3nsctl {args:?} did not finish within {CTL_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().expect("collect l3nsctl output");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}

/// The daemon under test.
pub struct Daemon {
    pub dir: PathBuf,
    pub control: PathBuf,
    pub state: PathBuf,
    pub events: Arc<Mutex<Vec<String>>>,
    pub saves: Arc<AtomicUsize>,
    /// Make the persist hook fail (to test the EIO answer).
    pub fail_saves: Arc<AtomicBool>,
    stop: Stop,
    handle: Option<JoinHandle<Runtime>>,
    worker: Option<JoinHandle<()>>,
    shared: Arc<l3ns_dataplane::worker::Shared>,
    pub wire: MemoryWire,
}

impl Daemon {
    /// Starts a daemon for `test`: root L2 with device `eth0`, nothing else.
    pub fn start(test: &str) -> Daemon {
        let dir = test_dir(test);
        Self::start_in(dir, Model::new())
    }

    /// Starts a daemon in `dir` on `model` (which must have, or gets, device `eth0`).
    pub fn start_in(dir: PathBuf, mut model: Model) -> Daemon {
        let control = dir.join("ctl.sock");
        let state = dir.join("state.json");
        let existing = model.devices().find(|d| d.name == "eth0").map(|d| d.id);
        let dev = match existing {
            Some(d) => d,
            None => model.add_device("eth0", OUR_MAC).expect("add eth0"),
        };
        let rt = Runtime::new(model, 1, vec!["eth0".into()], 64);
        let info = PortInfo {
            name: "eth0".into(),
            mac: OUR_MAC,
            max_frame: 1514,
        };
        let (port, wire) = memory_pair(info, 1024, TxMode::Collect);
        let worker = Worker::new(
            WorkerConfig {
                idle_sleep: Duration::from_millis(1),
                ..Default::default()
            },
            vec![WorkerPort {
                port,
                dev,
                index: 0,
            }],
            rt.shared.clone(),
            rt.stats.workers[0].clone(),
        );
        let shared = rt.shared.clone();
        let worker = std::thread::spawn(move || {
            worker.run(None);
        });
        let events = Arc::new(Mutex::new(Vec::new()));
        let saves = Arc::new(AtomicUsize::new(0));
        let fail_saves = Arc::new(AtomicBool::new(false));
        let (s, f, path) = (saves.clone(), fail_saves.clone(), state.clone());
        let persist = Box::new(move |m: &Model| -> std::io::Result<()> {
            if f.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("disk full (test)"));
            }
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(m)?)?;
            std::fs::rename(&tmp, &path)?;
            s.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        let stop = Stop::new();
        let host = Box::new(RecordingHost {
            events: events.clone(),
        });
        let handle = serve(
            ServeConfig::new(&control),
            rt,
            host,
            Some(persist),
            stop.clone(),
        )
        .expect("serve");
        Daemon {
            dir,
            control,
            state,
            events,
            saves,
            fail_saves,
            stop,
            handle: Some(handle),
            worker: Some(worker),
            shared,
            wire,
        }
    }

    /// `l3nsctl --control CTL ARGS`.
    pub fn ctl(&self, args: &[&str]) -> Out {
        let c = self.control.to_str().unwrap();
        let mut v = vec!["--control", c];
        v.extend_from_slice(args);
        l3nsctl(&v)
    }

    /// `l3nsctl --control CTL --as NS ARGS`.
    pub fn ctl_as(&self, ns: &str, args: &[&str]) -> Out {
        let c = self.control.to_str().unwrap();
        let mut v = vec!["--control", c, "--as", ns];
        v.extend_from_slice(args);
        l3nsctl(&v)
    }

    /// `l3nsctl --control SOCK ARGS` on another socket (a tenant's).
    pub fn ctl_on(&self, sock: &Path, args: &[&str]) -> Out {
        let c = sock.to_str().unwrap();
        let mut v = vec!["--control", c];
        v.extend_from_slice(args);
        l3nsctl(&v)
    }

    /// root owns 10.0.0.1/24; web1 and web2 (L3 children) own 10.0.0.2 and 10.0.0.3.
    pub fn with_two_tenants(self) -> Daemon {
        self.ctl(&["ns", "add", "web1"]).ok();
        self.ctl(&["ns", "add", "web2"]).ok();
        for a in ["10.0.0.1/24", "10.0.0.2/24", "10.0.0.3/24"] {
            self.ctl(&["addr", "add", a, "dev", "eth0"]).ok();
        }
        self.ctl(&["addr", "push", "10.0.0.2", "dev", "eth0", "--to", "web1"])
            .ok();
        self.ctl(&["addr", "push", "10.0.0.3", "dev", "eth0", "--to", "web2"])
            .ok();
        self
    }

    /// Puts a UDP datagram from the peer on the wire towards `dst:port`.
    pub fn inject_udp(&self, dst: Ipv4Addr, port: u16, payload: &[u8]) {
        self.wire
            .inject(udp_frame(dst, port, payload))
            .expect("rx ring has room");
    }

    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    /// The snapshot workers read now.
    pub fn snapshot(&self) -> Arc<l3ns_dataplane::owner_table::OwnerTable> {
        self.shared.table.load_full()
    }

    /// Stops the control thread and the worker; returns the runtime.
    pub fn stop(mut self) -> Runtime {
        self.shutdown()
            .expect("the control thread returns the runtime")
    }

    fn shutdown(&mut self) -> Option<Runtime> {
        self.stop.stop();
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
        self.handle.take().and_then(|h| h.join().ok())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A UDP frame from the peer to `dst:port` on `eth0`.
pub fn udp_frame(dst: Ipv4Addr, port: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(PEER_MAC, OUR_MAC)
        .ipv4(PEER.octets(), dst.octets(), 64)
        .udp(40000, port);
    let mut f = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut f, payload).unwrap();
    f
}

/// Polls `f` every 10 ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
