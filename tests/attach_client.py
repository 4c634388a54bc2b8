#!/usr/bin/env python3
"""Example process for l3ns's `attach:PATH` service.

l3nsd hands each datagram of an attached socket to this process over a Unix datagram socket
(SOCK_DGRAM) bound at PATH; every message, each way, is one datagram:

    offset  0: 4 bytes  source IPv4       (network byte order)
    offset  4: 2 bytes  source port       (big-endian)
    offset  8: 4 bytes  destination IPv4
    offset 12: 2 bytes  destination port
    offset 14: payload

Towards this process, source is the remote sender and destination the address and port the
datagram arrived on. Back to l3nsd, destination is where to send and source the address to send
from (0.0.0.0 lets l3ns choose, R13); the source port is ignored. Answering a datagram is
therefore swapping the two halves of the header.

This client answers every datagram with PREFIX + payload, prints one JSON line per datagram
(to stdout, or --log FILE), and exits after --count datagrams or --timeout seconds of silence.

    python3 tests/attach_client.py --path /tmp/echo.sock --count 10 --prefix "re: "
"""

import argparse
import ipaddress
import json
import os
import socket
import struct
import sys

HEADER = struct.Struct("!4sH4sH")


def decode(msg):
    """(src_ip, src_port, dst_ip, dst_port, payload) of one message."""
    if len(msg) < HEADER.size:
        raise ValueError("message shorter than the 12-byte header")
    s, sp, d, dp = HEADER.unpack_from(msg)
    return str(ipaddress.IPv4Address(s)), sp, str(ipaddress.IPv4Address(d)), dp, msg[HEADER.size:]


def encode(src_ip, src_port, dst_ip, dst_port, payload):
    return HEADER.pack(ipaddress.IPv4Address(src_ip).packed, src_port,
                       ipaddress.IPv4Address(dst_ip).packed, dst_port) + payload


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", required=True, help="where to bind the Unix datagram socket")
    ap.add_argument("--count", type=int, default=0, help="exit after this many datagrams (0: never)")
    ap.add_argument("--timeout", type=float, default=30.0, help="exit after this many idle seconds")
    ap.add_argument("--prefix", default="re: ", help="prepended to each answer's payload")
    ap.add_argument("--log", help="write the JSON lines here instead of stdout")
    args = ap.parse_args()

    try:
        os.unlink(args.path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(args.path)
    sock.settimeout(args.timeout)
    out = open(args.log, "a", buffering=1) if args.log else sys.stdout
    print("ready", flush=True)
    seen = 0
    try:
        while args.count == 0 or seen < args.count:
            try:
                msg, peer = sock.recvfrom(65536)
            except socket.timeout:
                break
            src, sport, dst, dport, payload = decode(msg)
            seen += 1
            out.write(json.dumps({"src": src, "src_port": sport, "dst": dst, "dst_port": dport,
                                  "payload": payload.decode("utf-8", "replace")}) + "\n")
            out.flush()
            # Answer from the address it was sent to, back to its sender.
            sock.sendto(encode(dst, dport, src, sport, args.prefix.encode() + payload), peer)
    finally:
        sock.close()
        os.unlink(args.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
