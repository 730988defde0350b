"""Network namespaces for the multi-host test: a bridge on this machine and one namespace per
participant, each with its own veth and address on the bridge's subnet. Needs root and
iproute2 (`.ci/run` installs it); ``available()`` says whether they are there."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass


def _ip() -> str | None:
    return shutil.which("ip") or ("/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else None)


def available() -> bool:
    """Root, iproute2, and a kernel that lets this process make namespaces."""
    ip = _ip()
    if ip is None or os.geteuid() != 0:
        return False
    name = f"flkprobe{os.getpid() % 10000}"
    made = subprocess.run([ip, "netns", "add", name], capture_output=True).returncode == 0
    if made:
        subprocess.run([ip, "netns", "del", name], capture_output=True)
    return made


@dataclass(frozen=True)
class Hosts:
    bridge_ip: str
    """The host's address on the bridge: where the stack listens."""
    names: list[str]
    ips: list[str]

    def prefix(self, i: int) -> list[str]:
        return [str(_ip()), "netns", "exec", self.names[i]]


@contextlib.contextmanager
def namespaces(count: int) -> Iterator[Hosts]:
    ip = str(_ip())
    tag = f"{os.getpid() % 1000}{random.randrange(100)}"
    net = f"10.{random.randrange(200, 250)}.{random.randrange(1, 250)}"
    bridge = f"flkbr{tag}"
    names = [f"flk{tag}n{i}" for i in range(count)]
    commands = [
        [ip, "link", "add", bridge, "type", "bridge"],
        [ip, "addr", "add", f"{net}.1/24", "dev", bridge],
        [ip, "link", "set", bridge, "up"],
    ]
    for i, name in enumerate(names):
        host, peer = f"flk{tag}h{i}", f"flk{tag}p{i}"
        commands += [
            [ip, "netns", "add", name],
            [ip, "link", "add", host, "type", "veth", "peer", "name", peer],
            [ip, "link", "set", peer, "netns", name],
            [ip, "link", "set", host, "master", bridge],
            [ip, "link", "set", host, "up"],
            [ip, "-n", name, "addr", "add", f"{net}.{10 + i}/24", "dev", peer],
            [ip, "-n", name, "link", "set", peer, "up"],
            [ip, "-n", name, "link", "set", "lo", "up"],
        ]
    try:
        for command in commands:
            subprocess.run(command, check=True, capture_output=True)
        yield Hosts(f"{net}.1", names, [f"{net}.{10 + i}" for i in range(count)])
    finally:
        for name in names:
            subprocess.run([ip, "netns", "del", name], capture_output=True)
        subprocess.run([ip, "link", "del", bridge], capture_output=True)
