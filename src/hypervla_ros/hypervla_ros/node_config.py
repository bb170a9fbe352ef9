"""One place for configuration: node parameter defaults come from config/hypervla.yaml.

Each node lists its parameters with a description and optional range here; the values live in the YAML
(`node_name: ros__parameters:`), which launch files, the bring-up command, the demo and the tests all use.
"""
from __future__ import annotations

import os
import pathlib
from collections import deque

import numpy as np
import yaml
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, Parameter, ParameterDescriptor, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

# Instruction, e-stop and episode events: the last message reaches subscribers that join later.
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# A GeneratePolicy client: DDS delivers every response of the service to every client, which keeps only its own,
# so with the default depth of 10 a burst of answers to other robots evicted this one's (64 clients: 35 lost).
GENERATOR_CLIENT = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)


def stamp_ns(stamp) -> int:
    """builtin_interfaces/Time (rclpy or rosbags) -> nanoseconds."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def config_path() -> pathlib.Path:
    """HYPERVLA_CONFIG, else the source tree's config/, else the installed share/hypervla/config/."""
    if os.environ.get("HYPERVLA_CONFIG"):
        return pathlib.Path(os.environ["HYPERVLA_CONFIG"])
    repo = pathlib.Path(__file__).resolve().parents[3] / "config" / "hypervla.yaml"
    if repo.is_file():
        return repo
    from ament_index_python.packages import get_package_share_directory

    return pathlib.Path(get_package_share_directory("hypervla")) / "config" / "hypervla.yaml"


def load_config(path: pathlib.Path | None = None) -> dict:
    return yaml.safe_load((path or config_path()).read_text())


def node_defaults(node_name: str, path: pathlib.Path | None = None) -> dict:
    cfg = load_config(path)
    if node_name not in cfg or "ros__parameters" not in cfg[node_name]:
        raise KeyError(f"{path or config_path()} has no '{node_name}: ros__parameters:' section")
    return cfg[node_name]["ros__parameters"]


def resolve_path(value: str) -> str:
    """A relative path (checkpoint, key files) is looked up in the current folder, beside the params file,
    in the folder above it (the repository, or share/hypervla for the installed config), then in the
    installed share/hypervla; the error lists where it looked."""
    p = pathlib.Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    params = config_path().resolve()
    places = [pathlib.Path.cwd(), params.parent, params.parents[1]]
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        places.append(pathlib.Path(get_package_share_directory("hypervla")))
    except (ImportError, PackageNotFoundError, ValueError):
        pass
    for place in dict.fromkeys(places):
        if (place / p).exists():
            return str(place / p)
    raise FileNotFoundError(f"{value}: not found in {', '.join(str(d) for d in dict.fromkeys(places))}")


def declare(node, schema: dict[str, tuple], defaults: dict, dynamic: tuple[str, ...] = ()) -> dict:
    """Declare every parameter in schema {name: (description, range or None)} with its YAML default. Only
    those in `dynamic` can change at run time; every other one is read-only, so `ros2 param set` is refused
    with a reason instead of reporting a change the node would never apply."""
    values = {}
    for name, (description, bounds) in schema.items():
        if name not in defaults:
            raise KeyError(f"parameter {node.get_name()}.{name} has no default in {config_path()}")
        default = defaults[name]
        desc = ParameterDescriptor(description=description, read_only=name not in dynamic)
        if isinstance(default, list) and all(isinstance(v, str) for v in default):
            desc.type = ParameterType.PARAMETER_STRING_ARRAY  # an empty list has no type of its own
        if bounds is not None:
            lo, hi = bounds
            if isinstance(default, float):
                desc.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
            elif isinstance(default, int) and not isinstance(default, bool):
                desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
        value = node.declare_parameter(name, default, desc).value
        values[name] = [] if value is None and isinstance(default, list) else value  # a params file's [] is unset
    return values


class Window:
    """Rolling window of samples for p50/p99 reports."""

    def __init__(self, size: int = 1000):
        self.samples: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self.samples.append(value)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.samples, q)) if self.samples else 0.0

    def __len__(self) -> int:
        return len(self.samples)


def init_index_request(index: int) -> SetParameters.Request:
    """A LIBERO bridge's next initial state (its `init_index` parameter), as the demo and the demonstrator set it."""
    value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=int(index))
    return SetParameters.Request(parameters=[Parameter(name="init_index", value=value)])
