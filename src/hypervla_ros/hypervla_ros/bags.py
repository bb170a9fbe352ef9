"""rosbag2 access through `rosbags` (pure Python; rosbag2 itself is not installable here).

One typestore knows the standard ROS 2 Kilted types plus this suite's messages, read from their .msg files,
so bags carry full message definitions and type hashes and `ros2 bag` can read them.
"""
from __future__ import annotations

import pathlib

from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
_TYPESTORE = None


class BagError(RuntimeError):
    """A bag that cannot be used, with the reason."""


def msg_dir() -> pathlib.Path:
    try:
        from ament_index_python.packages import get_package_share_directory

        return pathlib.Path(get_package_share_directory("hypervla_msgs")) / "msg"
    except Exception:  # not installed with colcon: the source tree
        return pathlib.Path(__file__).resolve().parents[2] / "hypervla_msgs" / "msg"


def typestore():
    global _TYPESTORE
    if _TYPESTORE is None:
        store = get_typestore(Stores.ROS2_KILTED)
        types = {}
        for path in sorted(msg_dir().glob("*.msg")):
            types.update(get_types_from_msg(path.read_text(), f"hypervla_msgs/msg/{path.stem}"))
        store.register(types)
        _TYPESTORE = store
    return _TYPESTORE


def qos(reliable: bool, transient_local: bool, depth: int = 10) -> Qos:
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE, zero, zero,
               QosLiveliness.AUTOMATIC, zero, False)


def open_writer(path: str | pathlib.Path, storage: str = "mcap") -> Writer:
    if storage not in STORAGES:
        raise BagError(f"unknown storage {storage!r} (expected one of {sorted(STORAGES)})")
    writer = Writer(pathlib.Path(path), version=9, storage_plugin=STORAGES[storage])
    writer.open()
    return writer


def add_topic(writer: Writer, topic: str, msgtype: str, offered: Qos | None = None):
    """msgtype like 'sensor_msgs/msg/Image'."""
    return writer.add_connection(topic, msgtype, typestore=typestore(),
                                 offered_qos_profiles=[offered] if offered else [])


def open_reader(path: str | pathlib.Path):
    """AnyReader over a rosbag2 folder (MCAP or sqlite3), with a clear error for anything unreadable."""
    from rosbags.highlevel import AnyReader

    path = pathlib.Path(path)
    if not path.exists():
        raise BagError(f"bag {path}: no such file or folder")
    try:
        reader = AnyReader([path], default_typestore=typestore())
        reader.open()
    except Exception as exc:  # rosbags raises several types for truncated/corrupt storage or metadata
        raise BagError(f"bag {path}: cannot be opened ({type(exc).__name__}: {exc})") from exc
    return reader
