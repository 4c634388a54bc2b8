//! The in-process socket API for applications and built-in services: receive from a socket's
//! queue, send through the workers. Binding and closing go through the control thread (the one
//! writer of the model); it hands out a `UdpSocket` once the binding is in the snapshot.

use crate::errno::Errno;
use crate::socket::{Datagram, Receiver, SocketQueue};
use crate::types::{NsId, SocketId, Subnet};
use crate::worker::{SendRequest, Shared};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

/// A bound UDP socket in a namespace.
#[derive(Debug)]
pub struct UdpSocket {
    id: SocketId,
    ns: NsId,
    addr: Ipv4Addr,
    port: u16,
    rx: Receiver,
    shared: Arc<Shared>,
}

impl UdpSocket {
    pub fn new(
        id: SocketId,
        ns: NsId,
        addr: Ipv4Addr,
        port: u16,
        queue: Arc<SocketQueue>,
        shared: Arc<Shared>,
    ) -> Self {
        UdpSocket {
            id,
            ns,
            addr,
            port,
            rx: Receiver::new(queue),
            shared,
        }
    }

    pub fn id(&self) -> SocketId {
        self.id
    }

    pub fn ns(&self) -> NsId {
        self.ns
    }

    pub fn local_addr(&self) -> (Ipv4Addr, u16) {
        (self.addr, self.port)
    }

    pub fn queue(&self) -> &Arc<SocketQueue> {
        self.rx.queue()
    }

    /// The next datagram, never blocking.
    pub fn try_recv(&mut self) -> Option<Datagram> {
        self.rx.try_recv()
    }

    /// Waits up to `timeout` for a datagram (parked, woken by the worker's hand-off).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<Datagram> {
        self.rx.recv_timeout(timeout)
    }

    /// The source address a send to `dst` uses: the bound address if it is a unicast address,
    /// else R13 on the current snapshot (`EADDRNOTAVAIL` when the namespace owns nothing
    /// usable: nothing leaves).
    pub fn source_for(&self, dst: Ipv4Addr) -> Result<Ipv4Addr, Errno> {
        let bound = self.addr;
        if !bound.is_unspecified() && !bound.is_broadcast() && !bound.is_multicast() {
            let t = self.shared.table.load();
            let is_bcast = t.namespace(self.ns).is_some_and(|v| {
                v.ifaddrs
                    .iter()
                    .any(|i| i.broadcast == bound || i.network() == bound)
            });
            if !is_bcast && (bound.is_loopback() == dst.is_loopback()) {
                return Ok(bound);
            }
        }
        let t = self.shared.table.load();
        t.select_source(self.ns, dst).map(|c| c.src).map_err(|e| {
            if e == Errno::ENOENT {
                Errno::EADDRNOTAVAIL
            } else {
                e
            }
        })
    }

    /// Sends `payload` to `dst:port` from the address R13 picks.
    pub fn send_to(&self, payload: &[u8], dst: Ipv4Addr, port: u16) -> Result<(), Errno> {
        let src = self.source_for(dst)?;
        self.send_from(src, payload, dst, port)
    }

    /// Sends with an explicit source address (like `IP_PKTINFO`). The worker transmits it
    /// only if this namespace owns `src` (R14); otherwise it is counted `tx_spoofed`.
    pub fn send_from(
        &self,
        src: Ipv4Addr,
        payload: &[u8],
        dst: Ipv4Addr,
        port: u16,
    ) -> Result<(), Errno> {
        if port == 0 {
            return Err(Errno::EINVAL);
        }
        let req = SendRequest {
            ns: self.ns,
            src,
            src_port: self.port,
            dst,
            dst_port: port,
            payload: payload.to_vec(),
        };
        self.shared.sends.push(req).map_err(|_| Errno::ENOBUFS)
    }
}
