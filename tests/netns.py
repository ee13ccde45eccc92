"""Hosts for the distributed tests: network namespaces joined by veth pairs to a bridge, each its own host.

    with Hosts(["master", "worker1", "worker2", "gateway"]) as hosts:   # root and `ip netns` needed (else `usable()`)
        hosts.popen("gateway", [...])               # a process on that host (its own hostname, e.g. cbw1-3fa2c1)
        hosts.addr["gateway"]                       # its address, 10.77.0.x
        hosts.cut("worker2")                        # its cable pulled: the bridge's end of its veth pair goes down

The bridge lives in a namespace of its own (the switch), so nothing is added to the machine's own network. The
hosts' loopbacks are up; each host reaches the others only through the switch.

`python tests/netns.py forward ADDR PORT...` (run on a host) forwards TCP from ADDR:PORT to 127.0.0.1:PORT, for
servers that bind loopback only (the stand-in and its Prometheus): like a Service in front of a pod. It prints
`port PORT: connection from ADDR` the first time each address connects to each port.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

SUBNET = "10.77.0"  # hosts get .1, .2, ... in the order given, /24
BRIDGE = "br0"
COMMAND_TIMEOUT = 10.0  # seconds any `ip` command may take


def usable() -> str:
    """Why the hosts cannot be made here ("" when they can): root and iproute2's `ip netns` are needed."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        return "iproute2's `ip` (and util-linux's `unshare`) are needed for network namespaces"
    probe = f"cbprobe-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=COMMAND_TIMEOUT)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    return ""


def ip(*args: str) -> None:
    """Run `ip ARGS` (bounded); a RuntimeError with its message when it fails."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class Hosts:
    """Network namespaces named `<prefix>-<random>`, one per host, on one bridge; removed (with every process left
    in them) by `close()`, which is idempotent."""

    PREFIX = {"master": "cbm", "worker1": "cbw1", "worker2": "cbw2", "gateway": "cbg"}

    def __init__(self, roles: Sequence[str]):
        tag = secrets.token_hex(3)
        self.roles = list(roles)
        self.ns = {role: f"{self.PREFIX.get(role, 'cbh')}-{tag}" for role in self.roles}
        self.switch = f"cbs-{tag}"
        self.addr = {role: f"{SUBNET}.{i}" for i, role in enumerate(self.roles, 1)}
        self.port = {role: f"p{i}-{tag}" for i, role in enumerate(self.roles, 1)}  # the bridge's end of each cable
        self.made: list[str] = []

    def open(self) -> Hosts:
        try:
            for ns in (self.switch, *self.ns.values()):
                ip("netns", "add", ns)
                self.made.append(ns)
                ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", self.switch, "link", "add", BRIDGE, "type", "bridge")
            ip("-n", self.switch, "link", "set", BRIDGE, "up")
            for role, ns in self.ns.items():
                ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", self.port[role], "netns",
                   self.switch)
                ip("-n", self.switch, "link", "set", self.port[role], "master", BRIDGE)
                ip("-n", self.switch, "link", "set", self.port[role], "up")
                ip("-n", ns, "addr", "add", f"{self.addr[role]}/24", "dev", "eth0")
                ip("-n", ns, "link", "set", "eth0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def command(self, role: str, argv: Sequence[str]) -> list[str]:
        """`argv` run on a host: in its namespace, with the host's own hostname (its namespace's name), as Locust
        names a worker by its hostname."""
        return ["ip", "netns", "exec", self.ns[role], "unshare", "--uts", "--", "sh", "-c",
                'hostname "$0" && exec "$@"', self.ns[role], *argv]

    def popen(self, role: str, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start `argv` on a host (`ip netns exec` then `unshare` and `sh` exec it: the Popen is the process)."""
        return subprocess.Popen(self.command(role, argv), **kwargs)

    def run(self, role: str, argv: Sequence[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
        """Run `argv` on a host to its end (bounded), its output captured as text."""
        return subprocess.run(self.command(role, argv), capture_output=True, text=True, timeout=timeout, **kwargs)

    def cut(self, role: str) -> None:
        """Pull a host's cable: the bridge's end of its veth pair goes down (the host sees no carrier)."""
        ip("-n", self.switch, "link", "set", self.port[role], "down")

    def mend(self, role: str) -> None:
        ip("-n", self.switch, "link", "set", self.port[role], "up")

    def pids(self, ns: str) -> list[int]:
        done = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        return [int(p) for p in done.stdout.split()]

    def close(self) -> None:
        """Kill what still runs on the hosts (SIGTERM, then SIGKILL after 10 s), then remove the namespaces (their
        veth pairs and the bridge go with them)."""
        made, self.made = self.made, []
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            for ns in made:
                for pid in self.pids(ns):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(self.pids(ns) for ns in made):
                time.sleep(0.1)
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=COMMAND_TIMEOUT)

    def __enter__(self) -> Hosts:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the forwarder ------------------------------------------------------------------------------------------------
async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


async def _forward(addr: str, ports: list[int]) -> None:
    seen: set[tuple[int, str]] = set()

    async def handle(port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0]
        if (port, peer) not in seen:  # who connected to which port, once each
            seen.add((port, peer))
            print(f"port {port}: connection from {peer}", flush=True)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        up_writer.close()
        writer.close()

    servers = [await asyncio.start_server(lambda r, w, p=port: handle(p, r, w), addr, port) for port in ports]
    print(f"forwarding {addr}:{','.join(map(str, ports))} -> 127.0.0.1", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] != "forward":
        sys.exit("usage: netns.py forward ADDR PORT...")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_forward(sys.argv[2], [int(p) for p in sys.argv[3:]]))
