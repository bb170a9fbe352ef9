"""Two computers on one, for the two-host test and `make bench`: Linux network namespaces joined by a veth pair.

Needs root and iproute2. A process started with `HostPair.prefix(side)` sees only the loopback and its end of the
link, so DDS discovery and data between the two sides cross a real UDP link (measured: Fast DDS with
config/fastdds.xml sends a 200 KB topic over the veth, not through the /dev/shm both namespaces share).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess


SIDES = ("gen", "robot")


def available() -> str:
    """'' when network namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    return ""


class HostPair:
    def __init__(self):
        tag = f"{os.getpid() % 10000}{random.randint(0, 99)}"
        net = f"10.{random.randint(200, 249)}.{random.randint(0, 255)}"
        self.ns = {side: f"hv{side}{tag}" for side in SIDES}
        self.dev = {side: f"hv{side[0]}{tag}" for side in SIDES}
        self.addr = {"gen": f"{net}.1", "robot": f"{net}.2"}

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)

    def __enter__(self) -> "HostPair":
        try:
            for side in SIDES:
                self._ip("netns", "add", self.ns[side])
            self._ip("link", "add", self.dev["gen"], "type", "veth", "peer", "name", self.dev["robot"])
            for side in SIDES:
                self._ip("link", "set", self.dev[side], "netns", self.ns[side])
                self._ip("-n", self.ns[side], "addr", "add", f"{self.addr[side]}/24", "dev", self.dev[side])
                self._ip("-n", self.ns[side], "link", "set", "lo", "up")
                self._ip("-n", self.ns[side], "link", "set", self.dev[side], "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for side in SIDES:  # deleting a namespace deletes its end of the veth, and so the pair
            subprocess.run(["ip", "netns", "del", self.ns[side]], capture_output=True)

    def prefix(self, side: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns[side]]

    def env(self, side: str) -> dict:
        """What each host sets for a generator on another host (README, "Many robots, one generator"): discovery
        beyond this computer, and the peer's address for unicast discovery where multicast does not pass."""
        return {"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET",
                "ROS_STATIC_PEERS": self.addr["robot" if side == "gen" else "gen"]}

    def sent_bytes(self, side: str) -> int:
        """Bytes this side has sent over the link."""
        out = subprocess.run(["ip", "-n", self.ns[side], "-s", "-j", "link", "show", self.dev[side]],
                             check=True, capture_output=True, text=True).stdout
        return int(json.loads(out)[0]["stats64"]["tx"]["bytes"])
