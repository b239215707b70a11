"""Hosts as network namespaces on one bridge, and the faults between them (issue 29).

Each `Host` is a network namespace of its own with one address on a private /24; the
namespaces hang off a bridge in a namespace of its own, and the test process (in the
machine's namespace) reaches every host through one veth of its own on the same bridge, as a
client on the network would. Processes started with `Host.argv` run inside their host (`ip
netns exec` execs them, so their PID is theirs: stop them by PID as ever).

Faults are nftables rules inside the hosts' namespaces, never in the machine's: `cut` drops
the packets between two hosts (or one way only), `heal` lets them through again. No packet
is refused (no RST, no ICMP): a cut link looks to TCP like a silent network.

Everything is named `chf<pid>-...` after the process that made it: `close` removes it, and
`sweep` (called by every new `Network`) removes what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

PREFIX = "chf"
SUBNETS = ipaddress.ip_network("10.199.0.0/16")
NFT_TABLE = "chf"


def missing() -> str | None:
    """What this machine lacks to make hosts, or None when it has it all."""
    if os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("nft")):
        return "network namespaces need root, iproute2 and nftables"
    return None


def _run(*argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(name: str) -> int | None:
    """The PID a harness name was made by (`chf<pid>-...` or `chf<pid>`), if it is one."""
    match = re.fullmatch(rf"{PREFIX}(\d+)(-.*)?", name)
    return int(match.group(1)) if match else None


def sweep() -> None:
    """Remove the namespaces and links of harness runs whose process is gone."""
    for line in _run("ip", "netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        pid = _owner(name)
        if pid is not None and not _alive(pid):
            _run("ip", "netns", "delete", name)
    for line in _run("ip", "-o", "link", "show").splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        pid = _owner(name)
        if pid is not None and not _alive(pid):
            with contextlib.suppress(RuntimeError):
                _run("ip", "link", "delete", name)


def harness_leftovers() -> list[str]:
    """Namespaces and links of this harness still present (of any run)."""
    namespaces = [line.split()[0] for line in _run("ip", "netns", "list").splitlines()
                  if line.strip() and _owner(line.split()[0]) is not None]
    links = [line.split(":")[1].strip().split("@")[0]
             for line in _run("ip", "-o", "link", "show").splitlines()]
    return namespaces + [name for name in links if _owner(name) is not None]


@dataclass(frozen=True)
class Host:
    name: str
    namespace: str
    address: str

    def argv(self, argv: list[str]) -> list[str]:
        """`argv` run inside this host."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def nft(self, script: str) -> None:
        _run(*self.argv(["nft", "-f", "-"]), stdin=script)


@dataclass
class Network:
    """A bridge, the test's own address on it, and the hosts added since."""

    hosts: dict[str, Host] = field(default_factory=dict)
    _switch: str = ""
    _subnet: ipaddress.IPv4Network | None = None

    def __post_init__(self) -> None:
        sweep()
        self._tag = f"{PREFIX}{os.getpid()}"
        self._switch = f"{self._tag}-switch"
        self._subnet = self._free_subnet()
        try:
            _run("ip", "netns", "add", self._switch)
            self._in_switch("ip", "link", "add", "br0", "type", "bridge")
            self._in_switch("ip", "link", "set", "br0", "up")
            self._plug(self._tag, None, self._address(1))  # the test's own: chf<pid>
        except BaseException:
            self.close()
            raise

    @property
    def client_address(self) -> str:
        """The address the test process's connections come from."""
        return self._address(1)

    def add_host(self, name: str) -> Host:
        host = Host(name, f"{self._tag}-{name}", self._address(len(self.hosts) + 2))
        _run("ip", "netns", "add", host.namespace)
        self.hosts[name] = host
        _run(*host.argv(["ip", "link", "set", "lo", "up"]))
        self._plug(f"{self._tag}x{len(self.hosts)}", host, host.address)
        host.nft(f"table inet {NFT_TABLE} {{\n"
                 "  chain input { type filter hook input priority 0; }\n"
                 "  chain output { type filter hook output priority 0; }\n}\n")
        return host

    def cut(self, a: Host, b: Host, one_way: bool = False) -> None:
        """Drop what `a` sends `b` (and, unless `one_way`, what `b` sends `a`)."""
        a.nft(f"add rule inet {NFT_TABLE} output ip daddr {b.address} drop\n")
        b.nft(f"add rule inet {NFT_TABLE} input ip saddr {a.address} drop\n")
        if not one_way:
            self.cut(b, a, one_way=True)

    def cut_client(self, host: Host) -> None:
        """Drop everything between the test's own connections and `host`, both ways."""
        host.nft(f"add rule inet {NFT_TABLE} output ip daddr {self.client_address} drop\n"
                 f"add rule inet {NFT_TABLE} input ip saddr {self.client_address} drop\n")

    def heal(self) -> None:
        """Every cut of every host is mended."""
        for host in self.hosts.values():
            host.nft(f"flush chain inet {NFT_TABLE} input\n"
                     f"flush chain inet {NFT_TABLE} output\n")

    def close(self) -> None:
        """Remove every namespace (their veths go with them) and the test's own link."""
        for host in self.hosts.values():
            with contextlib.suppress(RuntimeError):
                _run("ip", "netns", "delete", host.namespace)
        self.hosts.clear()
        with contextlib.suppress(RuntimeError):
            _run("ip", "link", "delete", self._tag)
        with contextlib.suppress(RuntimeError):
            _run("ip", "netns", "delete", self._switch)

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------

    def _address(self, index: int) -> str:
        assert self._subnet is not None
        return str(self._subnet.network_address + index)

    def _in_switch(self, *argv: str) -> None:
        _run("ip", "netns", "exec", self._switch, *argv)

    def _plug(self, link: str, host: Host | None, address: str) -> None:
        """A veth from the bridge to `host` (None: the machine's namespace) at `address`."""
        peer = f"{link}p"
        _run("ip", "link", "add", link, "type", "veth", "peer", "name", peer)
        _run("ip", "link", "set", peer, "netns", self._switch)
        self._in_switch("ip", "link", "set", peer, "master", "br0")
        self._in_switch("ip", "link", "set", peer, "up")
        inside = (lambda argv: host.argv(argv)) if host else (lambda argv: argv)
        if host is not None:
            _run("ip", "link", "set", link, "netns", host.namespace)
        assert self._subnet is not None
        _run(*inside(["ip", "addr", "add", f"{address}/{self._subnet.prefixlen}", "dev", link]))
        _run(*inside(["ip", "link", "set", link, "up"]))

    @staticmethod
    def _free_subnet() -> ipaddress.IPv4Network:
        """A /24 of SUBNETS that no interface of the machine's namespace is on."""
        used = _run("ip", "-o", "-4", "addr", "show")
        for subnet in SUBNETS.subnets(new_prefix=24):
            if f" {subnet.network_address + 1}/" not in used:
                return subnet
        raise RuntimeError(f"no free /24 left in {SUBNETS}")
