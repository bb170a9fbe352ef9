"""Several cameras on separate topics -> one multi-view frame for the policy, without ROS.

A frame set holds one image per camera, in the checkpoint's recorded view order, whose stamps lie within
`max_skew_s` of each other; its stamp is the oldest of them, so the controller's age check covers every
camera. Views are resized to the model's size and placed side by side (the layout the model reads). When
no set can be formed, `reason` names the camera that is missing, old or out of step.
"""
from __future__ import annotations

import cv2
import numpy as np

S = 1_000_000_000


class CameraSet:
    def __init__(self, names: list[str], size: int, max_skew_s: float):
        if not names or len(set(names)) != len(names):
            raise ValueError(f"camera names must be distinct and at least one: {names}")
        self.names, self.size, self.max_skew_ns = list(names), size, int(max_skew_s * S)
        self.latest: dict[str, tuple[np.ndarray, int, int]] = {}  # name -> (image, stamp, received)
        self.emitted_ns = 0  # stamp of the last set handed out (its oldest camera)

    def add(self, name: str, image: np.ndarray, stamp_ns: int, now_ns: int) -> tuple[np.ndarray, int] | None:
        """One camera's frame. Returns (views side by side, oldest stamp) when it completes a new set.
        Raises ValueError for an unknown camera or a stamp that does not move forward."""
        if name not in self.names:
            raise ValueError(f"camera {name!r} is not one of {self.names}")
        if stamp_ns <= 0:
            raise ValueError(f"camera {name!r}: frame has no stamp")
        old = self.latest.get(name)
        if old is not None and stamp_ns <= old[1]:
            raise ValueError(f"camera {name!r}: stamp goes backwards or repeats")
        if image.shape[:2] != (self.size, self.size):
            image = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_AREA)
        self.latest[name] = (image, stamp_ns, now_ns)
        if len(self.latest) < len(self.names):
            return None
        stamps = [self.latest[n][1] for n in self.names]
        # Every camera newer than the last set: no view is used twice, so a set runs at the slowest camera's rate.
        if max(stamps) - min(stamps) > self.max_skew_ns or min(stamps) <= self.emitted_ns:
            return None
        self.emitted_ns = min(stamps)
        return np.concatenate([self.latest[n][0] for n in self.names], axis=1), min(stamps)

    def reason(self, now_ns: int, max_age_ns: int) -> str:
        """Why no current set exists: the first camera never heard, too old, or out of step."""
        for n in self.names:
            if n not in self.latest:
                return f"camera {n!r} not heard"
        for n in self.names:
            age = now_ns - self.latest[n][1]
            if age > max_age_ns:
                return f"camera {n!r} frame {age / 1e6:.0f} ms old"
        stamps = {n: self.latest[n][1] for n in self.names}
        lo, hi = min(stamps, key=stamps.get), max(stamps, key=stamps.get)
        skew = (stamps[hi] - stamps[lo]) / 1e6
        if skew > self.max_skew_ns / 1e6:
            return f"cameras {lo!r} and {hi!r} {skew:.0f} ms apart (max_camera_skew_s {self.max_skew_ns / S:g})"
        return ""

    def clear(self) -> None:
        self.latest.clear()
        self.emitted_ns = 0
