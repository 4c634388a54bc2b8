//! A stop request that a sleeping thread notices at once.
//!
//! The daemon's threads other than the workers sleep until they have something to do: the
//! control thread until a request comes, the main thread until the next table or the end.
//! Polling a stop flag instead (every 20 or 50 ms, as they did) costs an idle daemon dozens of
//! wake-ups a second, each of which costs tens of microseconds of CPU on a virtual machine
//! (`bench/RESULTS.md`). A [`Stop`] is the flag together with a channel that closes when the
//! stop is asked for, so a thread can block on it alone ([`Stop::wait`]) or beside its own
//! channel (`crossbeam::select!` on [`Stop::closed`]) and still leave at once.

use crossbeam::channel::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A stop request; clones share it.
#[derive(Clone)]
pub struct Stop(Arc<Inner>);

struct Inner {
    flag: AtomicBool,
    /// Dropped by [`Stop::stop`], which closes `closed` for every waiter.
    tx: Mutex<Option<Sender<()>>>,
    closed: Receiver<()>,
}

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Stop").field(&self.is_stopped()).finish()
    }
}

impl Stop {
    pub fn new() -> Stop {
        let (tx, closed) = channel::bounded(0);
        Stop(Arc::new(Inner {
            flag: AtomicBool::new(false),
            tx: Mutex::new(Some(tx)),
            closed,
        }))
    }

    /// Asks every holder to stop and wakes those waiting. Idempotent.
    pub fn stop(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
        // Dropping the only sender disconnects the channel: every wait returns.
        drop(self.0.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
    }

    pub fn is_stopped(&self) -> bool {
        self.0.flag.load(Ordering::SeqCst)
    }

    /// Sleeps until the stop is asked for (returns true) or `timeout` passes (false); `None`
    /// waits for the stop alone.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        if self.is_stopped() {
            return true;
        }
        match timeout {
            None => {
                let _ = self.0.closed.recv();
                true
            }
            Some(t) => match self.0.closed.recv_timeout(t) {
                Err(RecvTimeoutError::Timeout) => self.is_stopped(),
                Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
            },
        }
    }

    /// A channel nothing is ever sent on, disconnected once the stop is asked for: ready in
    /// a `select!` from then on.
    pub fn closed(&self) -> &Receiver<()> {
        &self.0.closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_waiter_leaves_when_the_stop_is_asked_for_not_at_its_timeout() {
        let stop = Stop::new();
        assert!(
            !stop.wait(Some(Duration::from_millis(1))),
            "not stopped yet"
        );
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let s = stop.clone();
                std::thread::spawn(move || {
                    let t = Instant::now();
                    assert!(s.wait(None));
                    t.elapsed()
                })
            })
            .collect();
        let timed = {
            let s = stop.clone();
            std::thread::spawn(move || s.wait(Some(Duration::from_secs(3600))))
        };
        stop.stop();
        stop.stop();
        for w in waiters {
            assert!(w.join().unwrap() < Duration::from_secs(60));
        }
        assert!(
            timed.join().unwrap(),
            "the hour-long wait ended with the stop"
        );
        assert!(stop.is_stopped());
        assert!(stop.wait(Some(Duration::ZERO)));
        crossbeam::select! {
            recv(stop.closed()) -> r => assert!(r.is_err(), "closed, nothing sent"),
            default(Duration::from_secs(60)) => panic!("a select on closed() did not return"),
        }
    }
}
