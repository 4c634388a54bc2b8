//! The state file (`l3nsd --state FILE`): the whole [`Model`] as JSON, so that namespaces,
//! addresses, routes and sockets survive a restart.
//!
//! Writes are atomic: the model goes to `FILE.tmp`, which is fsynced and renamed over `FILE`,
//! and then the directory is fsynced, so after a crash `FILE` is either the old or the new
//! state, never a mix. The control thread saves after every successful change, before it
//! answers.
//!
//! Precedence at start-up: when `FILE` exists it is loaded **instead of** the configuration's
//! namespaces, addresses, routes and sockets; the configuration still provides the ports
//! (devices missing from the state are added). A damaged file — not JSON, or a model whose
//! invariants fail — stops the start with an error naming the file, and is never overwritten.

use crate::model::Model;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: cannot read it: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is damaged ({reason}); it was left untouched: repair or move it away, or start without --state")]
    Damaged { path: PathBuf, reason: String },
    #[error("state file {path}: cannot write it: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The temporary file a save writes first.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Loads the state file; `Ok(None)` when it does not exist.
pub fn load(path: &Path) -> Result<Option<Model>, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.into(),
                source,
            })
        }
    };
    // Model's Deserialize rebuilds the indexes and checks every invariant.
    serde_json::from_slice::<Model>(&bytes)
        .map(Some)
        .map_err(|e| StateError::Damaged {
            path: path.into(),
            reason: e.to_string(),
        })
}

/// Saves `model` atomically (tmp file, fsync, rename, fsync of the directory).
pub fn save(path: &Path, model: &Model) -> Result<(), StateError> {
    let werr = |source| StateError::Write {
        path: path.into(),
        source,
    };
    let json = serde_json::to_vec_pretty(model).map_err(|e| werr(std::io::Error::other(e)))?;
    let tmp = tmp_path(path);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(werr)?;
        f.write_all(&json).map_err(werr)?;
        f.write_all(b"\n").map_err(werr)?;
        f.sync_all().map_err(werr)?;
    }
    std::fs::rename(&tmp, path).map_err(werr)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).map_err(werr)?;
    Ok(())
}

/// Checks that the state file, if it exists, can be loaded, and that its directory is
/// writable, before anything starts (so a bad path fails at start-up, not at the first change).
pub fn check_writable(path: &Path) -> Result<(), StateError> {
    let tmp = tmp_path(path);
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .and_then(|_| std::fs::remove_file(&tmp))
        .map_err(|source| StateError::Write {
            path: path.into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use l3ns_dataplane::types::{LoopbackMode, NsId, Proto, Scope};
    use std::net::Ipv4Addr;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("l3ns-state-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn model() -> Model {
        let mut m = Model::new();
        m.add_device("eth0", [2, 0, 0, 0, 0, 1]).unwrap();
        m.ns_add(NsId::ROOT, "web1", None, LoopbackMode::Isolated)
            .unwrap();
        m.addr_add(
            NsId::ROOT,
            "eth0",
            Ipv4Addr::new(10, 0, 0, 2),
            24,
            None,
            None,
            Scope::Global,
        )
        .unwrap();
        m.addr_push(NsId::ROOT, "eth0", Ipv4Addr::new(10, 0, 0, 2), None, "web1")
            .unwrap();
        let web1 = m.ns_id("web1").unwrap();
        m.sock_bind(web1, Proto::Udp, Ipv4Addr::UNSPECIFIED, 7, "echo")
            .unwrap();
        m
    }

    #[test]
    fn save_then_load_is_equal() {
        let d = dir("roundtrip");
        let p = d.join("state.json");
        assert!(load(&p).unwrap().is_none());
        let m = model();
        save(&p, &m).unwrap();
        assert!(!tmp_path(&p).exists());
        assert_eq!(load(&p).unwrap().unwrap(), m);
    }

    #[test]
    fn damaged_files_are_errors_and_untouched() {
        let d = dir("damaged");
        let p = d.join("state.json");
        save(&p, &model()).unwrap();
        let full = std::fs::read(&p).unwrap();
        let truncated = &full[..full.len() / 2];
        std::fs::write(&p, truncated).unwrap();
        let e = load(&p).unwrap_err();
        assert!(matches!(e, StateError::Damaged { .. }), "{e}");
        assert!(e.to_string().contains(&p.display().to_string()));
        assert_eq!(std::fs::read(&p).unwrap(), truncated);
        std::fs::write(&p, b"\x00garbage").unwrap();
        assert!(matches!(load(&p).unwrap_err(), StateError::Damaged { .. }));
        // Valid JSON, broken invariant: an ifaddr owned by a namespace that does not exist.
        let mut v: serde_json::Value = serde_json::from_slice(&full).unwrap();
        v["ifaddrs"][0]["owner"] = serde_json::json!(99);
        let bad = serde_json::to_vec(&v).unwrap();
        std::fs::write(&p, &bad).unwrap();
        let e = load(&p).unwrap_err();
        assert!(e.to_string().contains("inconsistent"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), bad);
    }
}
