//! The client side of the control protocol, used by `l3nsctl` and the tests.

use super::protocol::{Envelope, Reply, Request};
use crate::error::ControlError;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a client waits for the daemon's answer (it may be saving a large state file).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a call did not return a result.
#[derive(thiserror::Error, Debug)]
pub enum ClientError {
    /// Nothing answers on the control socket (`l3nsctl` exits 2).
    #[error("cannot reach l3nsd at {}: {source}; is l3nsd running? (--control)", path.display())]
    Connect { path: PathBuf, source: io::Error },
    /// The connection broke or timed out mid-request (`l3nsctl` exits 2).
    #[error("lost the connection to l3nsd at {}: {source}; the request may or may not have been applied", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// The daemon answered something that is not a reply (`l3nsctl` exits 2).
    #[error("l3nsd at {} answered something that is not a reply: {detail}", path.display())]
    Protocol { path: PathBuf, detail: String },
    /// The daemon refused the request (`l3nsctl` exits 1).
    #[error("{0}")]
    Remote(ControlError),
}

/// Sends `req` as `as_ns` (`None`: the socket's own identity) to the daemon on `control`
/// and returns the `ok` value.
pub fn call(
    control: &Path,
    as_ns: Option<&str>,
    req: &Request,
) -> Result<serde_json::Value, ClientError> {
    let stream = UnixStream::connect(control).map_err(|source| ClientError::Connect {
        path: control.to_path_buf(),
        source,
    })?;
    let io_err = |source| ClientError::Io {
        path: control.to_path_buf(),
        source,
    };
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(io_err)?;
    stream
        .set_write_timeout(Some(ANSWER_TIMEOUT))
        .map_err(io_err)?;
    let env = Envelope {
        as_ns: as_ns.map(str::to_string),
        request: req.clone(),
    };
    let mut line = serde_json::to_string(&env).map_err(|e| ClientError::Protocol {
        path: control.to_path_buf(),
        detail: e.to_string(),
    })?;
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(io_err)?;
    let mut answer = String::new();
    let n = BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(io_err)?;
    if n == 0 {
        return Err(io_err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "l3nsd closed the connection without answering",
        )));
    }
    match serde_json::from_str::<Reply>(&answer) {
        Ok(Reply::Ok(v)) => Ok(v),
        Ok(Reply::Error(e)) => Err(ClientError::Remote(e)),
        Err(e) => Err(ClientError::Protocol {
            path: control.to_path_buf(),
            detail: e.to_string(),
        }),
    }
}
