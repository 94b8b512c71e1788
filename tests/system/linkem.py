#!/usr/bin/env python3
"""linkem.py - a user-space stand-in for tc netem, for kernels without
sch_netem: one emulated link between two TAP devices, each frame delayed
by a fixed time and dropped with a given probability, in both directions.

    linkem.py PARAMS_FILE TAP_A TAP_B

Creates TAP_A and TAP_B (IFF_TAP, no packet info: whole Ethernet frames)
in the current network namespace and relays frames between them. The
caller moves TAP_A into a host's namespace (as its eth0) and puts TAP_B
on a bridge. PARAMS_FILE holds "DELAY_MS LOSS_PERCENT"; SIGHUP re-reads
it. Prints "ready" on stdout once both devices exist. Frames keep their
order per direction (a fixed delay cannot reorder them). A device that is
down (a cut-off link) makes writes fail: those frames are dropped.

Why frames and not a TCP proxy: loss and delay then act on TCP segments,
so retransmission and congestion control are exercised as with netem.
Used by netns-lib.sh only when `tc qdisc add ... netem` is refused.
"""
import errno
import fcntl
import heapq
import os
import random
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
MAX_QUEUED = 20000  # frames in flight per direction; beyond: dropped


def open_tap(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    ifr = struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI)
    fcntl.ioctl(fd, TUNSETIFF, ifr)
    return fd


class Params:
    def __init__(self, path):
        self.path = path
        self.delay = 0.0
        self.loss = 0.0
        self.reload()

    def reload(self):
        with open(self.path) as f:
            d, l = f.read().split()[:2]
        self.delay = float(d) / 1000.0
        self.loss = float(l) / 100.0


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: linkem.py PARAMS_FILE TAP_A TAP_B")
    params = Params(sys.argv[1])
    fa, fb = open_tap(sys.argv[2]), open_tap(sys.argv[3])
    other = {fa: fb, fb: fa}
    reload = [False]
    signal.signal(signal.SIGHUP, lambda *_: reload.__setitem__(0, True))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    rng = random.Random(os.getpid())
    queue = []  # (due, seq, fd_out, frame)
    seq = 0
    queued = {fa: 0, fb: 0}
    while True:
        if reload[0]:
            reload[0] = False
            params.reload()
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(queue)
            queued[out] -= 1
            try:
                os.write(out, frame)
            except OSError:
                pass  # device down (cut off) or full: the frame is lost
        timeout = max(0.0, queue[0][0] - now) if queue else 1.0
        try:
            ready, _, _ = select.select([fa, fb], [], [], timeout)
        except InterruptedError:
            continue
        now = time.monotonic()
        for fd in ready:
            for _ in range(256):  # bounded per wake-up
                try:
                    frame = os.read(fd, 65536)
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EIO):
                        raise
                    break
                if params.loss > 0 and rng.random() < params.loss:
                    continue
                out = other[fd]
                if queued[out] >= MAX_QUEUED:
                    continue
                queued[out] += 1
                seq += 1
                heapq.heappush(queue, (now + params.delay, seq, out, frame))


if __name__ == "__main__":
    main()
