//! The open-file limit l3nsd starts with.
//!
//! Every namespace other than `root` has a tenant socket, one file descriptor each
//! (`api::server`), so l3nsd with 100,000 namespaces needs more than 100,000 descriptors.
//! Service managers and shells commonly start programs with a soft limit of 1,024 under a
//! much higher hard limit (systemd: 1,024 / 524,288), a soft limit kept low only for programs
//! that still use `select(2)`. l3nsd uses epoll everywhere (mio, DPDK's EAL), so at start it
//! raises its soft limit to the hard one, as the Go runtime and many daemons do. It cannot go
//! past the hard limit (`LimitNOFILE=` or `ulimit -Hn` sets it); when that is too low the
//! tenant sockets it could not make are reported with a hint (`api::server`).

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use std::fmt;

/// What [`raise_nofile`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nofile {
    /// The soft limit already was the hard one (or unlimited).
    AtHard { limit: Option<u64> },
    /// The soft limit was raised from `from` to `to`, the hard limit (`None`: unlimited).
    Raised { from: u64, to: Option<u64> },
    /// The kernel refused to raise it; it stays at `soft`.
    Refused {
        soft: u64,
        hard: Option<u64>,
        why: String,
    },
}

/// Raises the soft open-file limit of this process to its hard limit.
pub fn raise_nofile() -> Nofile {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let Some(soft) = current else {
        return Nofile::AtHard { limit: None };
    };
    if maximum == Some(soft) {
        return Nofile::AtHard { limit: Some(soft) };
    }
    let want = Rlimit {
        current: maximum,
        maximum,
    };
    match setrlimit(Resource::Nofile, want) {
        Ok(()) => Nofile::Raised {
            from: soft,
            to: maximum,
        },
        Err(e) => Nofile::Refused {
            soft,
            hard: maximum,
            why: std::io::Error::from(e).to_string(),
        },
    }
}

fn limit(l: Option<u64>) -> String {
    l.map_or_else(|| "unlimited".to_string(), |n| n.to_string())
}

impl fmt::Display for Nofile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Nofile::AtHard { limit: l } => write!(f, "open files: limit {}", limit(*l)),
            Nofile::Raised { from, to } => write!(
                f,
                "open files: soft limit raised from {from} to the hard limit, {}",
                limit(*to)
            ),
            Nofile::Refused { soft, hard, why } => write!(
                f,
                "open files: could not raise the soft limit {soft} to the hard limit {}: {why}",
                limit(*hard)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let r = raise_nofile();
        let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
        if !matches!(r, Nofile::Refused { .. }) {
            assert_eq!(current, maximum, "{r}");
            // A second call finds nothing left to do.
            assert!(matches!(raise_nofile(), Nofile::AtHard { .. }));
        }
    }

    #[test]
    fn each_outcome_reads_as_one_line() {
        let s = Nofile::Raised {
            from: 1024,
            to: Some(524_288),
        }
        .to_string();
        assert_eq!(
            s,
            "open files: soft limit raised from 1024 to the hard limit, 524288"
        );
        assert!(Nofile::AtHard { limit: None }
            .to_string()
            .contains("unlimited"));
    }
}
