"""Hosts on a network: each in a network namespace of its own, linked by a veth pair to a switch
that delays and loses frames like `tc netem delay 50ms loss 1%` on each host's link; partitions
between two named hosts, and a host lost for good.

    with Network(folder, ["broker", "db", "ingest"]) as net:
        with net.inside("db"):            # this thread, and what it starts, is on host "db"
            influxdb.start()
        net.partition("ingest", "db")     # both directions, these two hosts only
        net.heal("ingest", "db")
        net.lose("ingest")                # its processes SIGKILLed, its link down

The harness needs only what a minimal kernel has — veth, AF_PACKET, the clsact qdisc and the
cls_bpf classifier — because that is what it gets: this project's machine runs a kernel without
`netem`, `prio` or the `gact` action (CONFIG_NET_SCH_NETEM, _PRIO and NET_ACT_GACT unset), and
CI may run the same. So:

- **The switch** is a process (`python -m tests.support.netns`) in a namespace of its own, one
  AF_PACKET socket on the switch's end of each host's veth: it learns MAC addresses like a
  bridge, drops 1 % of the frames each host sends and delivers the rest 50 ms after they arrived
  (in order, like netem without jitter). Frames pass with their offload metadata (a virtio-net
  header: segmentation and checksum), and each host's link has `gso_max_segs 1`, so TCP sends
  MTU-sized segments and a loss costs one segment, as on a wire. A host-to-host path has 50 ms
  one way (100 ms round trip) and 1 % loss in each direction.
- **A partition** is a tc filter (clsact, `cls_bpf` in direct-action mode with classic BPF, no
  action modules needed) on the egress of each of the two hosts' switch ports, dropping the IPv4
  frames from the other host. It drops after the sender's own stack let them go, so the sender
  sees silence, as on a broken route; ARP still passes. Every other pair of hosts is unaffected.
- **Namespaces have no names** (no `ip netns add`, so nothing in /run/netns to forget): each is
  held by a `sleep` that this process started in a fresh namespace (unshare) and that dies with
  it (PR_SET_PDEATHSIG), as does everything the tests start on a host (the project's servers and
  processes all set it). So when the test run ends — teardown, Ctrl-C, even SIGKILL — the last
  process of each namespace goes and the kernel removes the namespace with its veths: nothing is
  left behind, and the root namespace (the machine's interfaces, addresses, routes) is never
  touched: every `ip`/`tc` command runs through `nsenter` into the namespace it is meant for,
  and no interface of ours has a name that exists outside them.

`inside(host)` moves the calling thread into a host's namespace for the block (setns): a
process started there runs on that host (its children and threads too), a socket opened there
belongs to it. That is how the servers (citysense.servers), ingest processes, the API and the
test's own MQTT clients and InfluxDB queries run on their hosts without changing them.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import functools
import ipaddress
import os
import random
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from common.process import die_with_parent
from tests.support.polling import wait_for

ROOT = Path(__file__).resolve().parents[2]
DELAY = 0.050  # seconds, each frame a host sends
LOSS = 0.01  # of the frames each host sends
SUBNET = "10.77.0.0/24"  # private; only ever configured inside our namespaces
LINK = "cslink"  # a host's end of its veth (no interface of the machine has this name)
MTU = 1500

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

# AF_PACKET options (linux/if_packet.h)
_SOL_PACKET = 263
_PACKET_VNET_HDR = 15
_PACKET_IGNORE_OUTGOING = 23
_ETH_P_ALL = 0x0003
_VNET_HDR = 10  # struct virtio_net_hdr, before each frame
_SO_RCVBUFFORCE = 33
_SO_SNDBUFFORCE = 32

_TC_ACT_SHOT = 2
_TC_ACT_UNSPEC = 0xFFFFFFFF  # -1: no verdict, the next filter decides


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _unshare_net() -> None:
    """preexec_fn of a namespace holder: die with us, in a network namespace of its own."""
    die_with_parent()
    if _libc.unshare(_CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")


def _netns_inode(pid: int | str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:  # gone, or a kernel thread
        return None


def drop_from(address: str) -> str:
    """Classic BPF for cls_bpf in direct-action mode: IPv4 frames from `address` are shot, any
    other frame gets no verdict (the next filter, then the device, takes it)."""
    src = int(ipaddress.IPv4Address(address))
    program = [
        (0x28, 0, 0, 12),  # ldh [12]            ethertype
        (0x15, 0, 3, 0x0800),  # jeq #IPv4, else no verdict
        (0x20, 0, 0, 26),  # ld [26]             IPv4 source address
        (0x15, 0, 1, src),  # jeq #src, else no verdict
        (0x06, 0, 0, _TC_ACT_SHOT),  # ret #TC_ACT_SHOT
        (0x06, 0, 0, _TC_ACT_UNSPEC),  # ret #TC_ACT_UNSPEC
    ]
    return f"{len(program)}," + ",".join(" ".join(map(str, op)) for op in program)


@dataclass
class Host:
    name: str
    address: str
    port: str  # the switch's end of its link
    holder: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.holder.pid

    @property
    def netns(self) -> str:
        return f"/proc/{self.pid}/ns/net"


@dataclass
class Network:
    """Hosts on one switch; a context manager that removes everything when it ends."""

    folder: Path
    names: Sequence[str]
    delay: float = DELAY
    loss: float = LOSS
    subnet: str = SUBNET
    hosts: dict[str, Host] = field(default_factory=dict, init=False)
    _switch: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _relay: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _partitions: set[frozenset[str]] = field(default_factory=set, init=False)
    lost: set[str] = field(default_factory=set, init=False)

    def __enter__(self) -> Network:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def relay_log(self) -> Path:
        return self.folder / "switch.log"

    # --- building it -----------------------------------------------------------------------

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        net = ipaddress.IPv4Network(self.subnet)
        if len(self.names) > net.num_addresses - 2 or len(set(self.names)) != len(self.names):
            raise ValueError(f"host names must be distinct and fit in {self.subnet}")
        self._switch = self._holder()
        self._quiet(self._switch.pid)
        for n, name in enumerate(self.names, start=1):
            holder = self._holder()
            host = Host(name, str(net[n]), f"csp{n}-{name}"[:15], holder)
            self.hosts[name] = host
            self._quiet(host.pid)
            veth = ["type", "veth", "peer", "name", LINK, "mtu", str(MTU), "netns", str(host.pid)]
            self._ip(self._switch.pid, "link", "add", host.port, "mtu", str(MTU), *veth)
            self._ip(host.pid, "link", "set", LINK, "gso_max_segs", "1")
            self._ip(host.pid, "address", "add", f"{host.address}/{net.prefixlen}", "dev", LINK)
            self._ip(host.pid, "link", "set", "lo", "up")
            self._ip(host.pid, "link", "set", LINK, "up")
            self._ip(self._switch.pid, "link", "set", host.port, "up")
            self._tc(self._switch.pid, "qdisc", "add", "dev", host.port, "clsact")
        self._start_relay()
        wait_for(self._all_up, 10, 0.05, "every link up")

    def _holder(self) -> subprocess.Popen[bytes]:
        """A process in a new network namespace that only keeps it (and dies with us)."""
        return subprocess.Popen(
            ["sleep", "infinity"],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_unshare_net,  # noqa: PLW1509 - prctl and unshare only, no locks taken
        )

    def _quiet(self, pid: int) -> None:
        """No IPv6 in our namespaces: no router solicitations or DAD on the links."""
        for scope in ("all", "default"):
            self._nsenter(pid, "sh", "-c", f"echo 1 > /proc/sys/net/ipv6/conf/{scope}/disable_ipv6")

    def _start_relay(self) -> None:
        assert self._switch is not None
        ports = [host.port for host in self.hosts.values()]
        with self.relay_log.open("wb") as log:
            self._relay = subprocess.Popen(
                [
                    "nsenter",
                    f"--net=/proc/{self._switch.pid}/ns/net",
                    sys.executable,
                    "-m",
                    "tests.support.netns",
                    "--delay",
                    str(self.delay),
                    "--loss",
                    str(self.loss),
                    *ports,
                ],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - prctl only, no locks taken
            )
        wait_for(lambda: self._relay_says("ready"), 20, 0.05, "the switch")

    def _relay_says(self, text: str) -> bool:
        self.check()
        return text in self.relay_log.read_text(errors="replace")

    def _all_up(self) -> bool:
        return all(
            "LOWER_UP" in self._ip(host.pid, "link", "show", LINK) for host in self.hosts.values()
        )

    # --- commands in a namespace -----------------------------------------------------------

    def _nsenter(self, pid: int, *argv: str) -> str:
        done = subprocess.run(
            ["nsenter", f"--net=/proc/{pid}/ns/net", *argv],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"{' '.join(argv)} in netns of {pid}: {done.stderr.strip()}")
        return done.stdout

    def _ip(self, pid: int, *args: str) -> str:
        return self._nsenter(pid, "ip", *args)

    def _tc(self, pid: int, *args: str) -> str:
        return self._nsenter(pid, "tc", *args)

    def run(self, name: str, *argv: str) -> str:
        """A command on host `name` (e.g. `ss -tn`); its output."""
        return self._nsenter(self.hosts[name].pid, *argv)

    @contextlib.contextmanager
    def inside(self, name: str) -> Iterator[Host]:
        """This thread on host `name` for the block: what it starts or opens belongs there."""
        host = self.hosts[name]
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            there = os.open(host.netns, os.O_RDONLY)
            try:
                _setns(there)
                try:
                    yield host
                finally:
                    _setns(own)
            finally:
                os.close(there)
        finally:
            os.close(own)

    def address(self, name: str) -> str:
        return self.hosts[name].address

    # --- faults ----------------------------------------------------------------------------

    def partition(self, a: str, b: str) -> None:
        """Drop every IPv4 frame between hosts `a` and `b`, both directions, until `heal`."""
        pair = frozenset((a, b))
        assert len(pair) == 2 and pair not in self._partitions, f"{a}, {b} already partitioned"
        assert self._switch is not None
        for here, there in ((a, b), (b, a)):
            self._tc(self._switch.pid, "filter", "add", "dev", self.hosts[here].port, "egress",
                     "prio", str(self._prio(there)), "bpf", "da", "bytecode",
                     drop_from(self.hosts[there].address))  # fmt: skip
        self._partitions.add(pair)

    def heal(self, a: str, b: str) -> None:
        pair = frozenset((a, b))
        assert pair in self._partitions, f"{a}, {b} are not partitioned"
        assert self._switch is not None
        for here, there in ((a, b), (b, a)):
            self._tc(self._switch.pid, "filter", "del", "dev", self.hosts[here].port, "egress",
                     "prio", str(self._prio(there)))  # fmt: skip
        self._partitions.discard(pair)

    def _prio(self, name: str) -> int:
        return 100 + list(self.hosts).index(name)

    def lose(self, name: str) -> list[int]:
        """Host `name` gone for good: every process on it SIGKILLed, its link down (both ends).
        The pids killed."""
        host = self.hosts[name]
        killed = self.kill_processes(name)
        self._ip(host.pid, "link", "set", LINK, "down")
        assert self._switch is not None
        self._ip(self._switch.pid, "link", "set", host.port, "down")
        self.lost.add(name)
        return killed

    def processes(self, name: str) -> list[int]:
        """Processes running on host `name` (in its namespace), but the one holding it."""
        host = self.hosts[name]
        inode = _netns_inode(host.pid)
        found = []
        for entry in Path("/proc").iterdir():
            if (
                entry.name.isdigit()
                and int(entry.name) != host.pid
                and inode is not None
                and _netns_inode(entry.name) == inode
            ):
                found.append(int(entry.name))
        return found

    def kill_processes(self, name: str) -> list[int]:
        """SIGKILL every process on host `name`, and wait until they are gone."""
        pids = self.processes(name)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not self.processes(name), 10, 0.05, f"processes on {name} gone")
        return pids

    # --- state -----------------------------------------------------------------------------

    def check(self) -> None:
        """Raise if the switch died (every link would be cut)."""
        if self._relay is not None and self._relay.poll() is not None:
            tail = self.relay_log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the switch exited with {self._relay.returncode}:\n{tail}")

    def tcp_retransmits(self, name: str) -> int:
        """TCP segments host `name` sent again so far (its namespace's /proc/net/snmp)."""
        lines = Path(f"/proc/{self.hosts[name].pid}/net/snmp").read_text().splitlines()
        heads, values = (ln.split() for ln in lines if ln.startswith("Tcp:"))
        return int(dict(zip(heads, values, strict=True))["RetransSegs"])

    def switch_counts(self) -> dict[str, int]:
        """What the switch did so far: frames forwarded, lost, refused by a partition."""
        assert self._relay is not None
        self.check()
        before = self.relay_log.stat().st_size
        self._relay.send_signal(signal.SIGUSR1)
        # The first whole `counts …` line written since: the size alone can grow by part of a
        # line, or by another line of the switch's log (seen once under load: a KeyError).
        line = wait_for(lambda: self._counts_line(before), 5, 0.02, "switch counts")
        return {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}

    def _counts_line(self, offset: int) -> str | None:
        with self.relay_log.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        whole = text[: text.rfind("\n") + 1].splitlines()
        return next((ln for ln in whole if ln.startswith("counts ") and "refused=" in ln), None)

    # --- teardown --------------------------------------------------------------------------

    def close(self) -> None:
        """Everything gone: processes on every host, the switch, the namespaces and links."""
        for name in list(self.hosts):
            with contextlib.suppress(Exception):
                self.kill_processes(name)
        if self._relay is not None:
            self._relay.terminate()
            try:
                self._relay.wait(10)
            except subprocess.TimeoutExpired:
                self._relay.kill()
                self._relay.wait()
        holders = [h.holder for h in self.hosts.values()]
        if self._switch is not None:
            holders.append(self._switch)
        for holder in holders:
            if holder.poll() is None:
                holder.kill()
            holder.wait()
        self.hosts.clear()
        self._switch = self._relay = None


@functools.cache
def unavailable() -> str | None:
    """Why these tests cannot run here (not root, no namespaces, no veth or cls_bpf), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    try:
        with tempfile.TemporaryDirectory() as folder, Network(Path(folder), ["a", "b"]) as net:
            net.partition("a", "b")
            net.heal("a", "b")
    except (OSError, RuntimeError, subprocess.SubprocessError, AssertionError) as exc:
        return f"cannot build a network of namespaces here: {exc}"
    return None


# --- the switch (runs in its own namespace: python -m tests.support.netns PORT...) -----------


def _packet_socket(port: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
    sock.setsockopt(_SOL_PACKET, _PACKET_VNET_HDR, 1)
    sock.setsockopt(_SOL_PACKET, _PACKET_IGNORE_OUTGOING, 1)
    sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 16 * 1024**2)
    sock.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, 16 * 1024**2)
    sock.bind((port, 0))
    sock.setblocking(False)
    return sock


def switch(ports: Sequence[str], delay: float, loss: float) -> None:
    """Forward frames between `ports` like a learning bridge, each frame `delay` seconds after
    it arrived, but `loss` of them, at random. Prints its counts on SIGUSR1 and at the end."""
    socks = [_packet_socket(port) for port in ports]
    by_fd = {sock.fileno(): sock for sock in socks}
    poller = select.epoll()
    for sock in socks:
        poller.register(sock.fileno(), select.EPOLLIN)
    where: dict[bytes, socket.socket] = {}  # MAC address -> the port it was last seen on
    line: deque[tuple[float, socket.socket, bytes]] = deque()
    counts = {"forwarded": 0, "lost": 0, "refused": 0, "port_down": 0}
    report = [False]

    def on_usr1(_sig: int, _frame: FrameType | None) -> None:
        report[0] = True

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGTERM, on_term)

    def say(what: str) -> None:
        print(what, " ".join(f"{k}={v}" for k, v in counts.items()), flush=True)

    print("ready", flush=True)
    try:
        while True:
            timeout = max(0.0, line[0][0] - time.monotonic()) if line else 1.0
            try:
                events = poller.poll(timeout)
            except InterruptedError:
                events = []
            for fd, _mask in events:
                sock = by_fd[fd]
                while True:
                    try:
                        frame = sock.recv(65536 + _VNET_HDR + 64)
                    except BlockingIOError:
                        break
                    except OSError:  # ENETDOWN, once, when a lost host's link went down
                        counts["port_down"] += 1
                        break
                    if random.random() < loss:
                        counts["lost"] += 1
                        continue
                    where[frame[_VNET_HDR + 6 : _VNET_HDR + 12]] = sock
                    line.append((time.monotonic() + delay, sock, frame))
            now = time.monotonic()
            while line and line[0][0] <= now:
                _due, source, frame = line.popleft()
                dest = frame[_VNET_HDR : _VNET_HDR + 6]
                known = None if dest[0] & 1 else where.get(dest)
                for out in [known] if known is not None else socks:
                    if out is source:
                        continue
                    try:
                        out.send(frame)
                        counts["forwarded"] += 1
                    except OSError as exc:  # ENOBUFS: a tc filter shot it; ENETDOWN: lost host
                        counts["refused" if exc.errno == errno.ENOBUFS else "port_down"] += 1
            if report[0]:
                report[0] = False
                say("counts")
    finally:
        say("final")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the test network's switch")
    parser.add_argument("--delay", type=float, default=DELAY)
    parser.add_argument("--loss", type=float, default=LOSS)
    parser.add_argument("ports", nargs="+")
    args = parser.parse_args(argv)
    switch(args.ports, args.delay, args.loss)


if __name__ == "__main__":
    main()
