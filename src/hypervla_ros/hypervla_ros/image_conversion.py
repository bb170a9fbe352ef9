"""sensor_msgs Image / CompressedImage <-> numpy RGB, written with numpy (PyPI's cv_bridge is broken).

Every rejection raises ImageError with a message fit for a diagnostic; nothing here returns a partial image.
"""
from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
import PIL.Image
from sensor_msgs.msg import CompressedImage, Image

# encoding -> (channels, channel order to take as RGB)
ENCODINGS = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, None),
}
MAX_PIXELS = 4096 * 4096
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")


class ImageError(ValueError):
    pass


def image_to_rgb(msg: Image) -> np.ndarray:
    """Image -> (H, W, 3) uint8 RGB. Handles row padding (step > width * channels)."""
    enc = msg.encoding.lower()
    if enc not in ENCODINGS:
        raise ImageError(f"unsupported image encoding {msg.encoding!r} (supported: {', '.join(ENCODINGS)})")
    channels, order = ENCODINGS[enc]
    h, w, step = msg.height, msg.width, msg.step
    if h == 0 or w == 0:
        raise ImageError(f"empty image ({w}x{h})")
    if h * w > MAX_PIXELS:
        raise ImageError(f"image of {w}x{h} exceeds the {MAX_PIXELS}-pixel limit")
    row = w * channels
    if step < row:
        raise ImageError(f"step {step} is smaller than width x channels = {row} for {enc}")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != step * h:
        raise ImageError(f"data holds {data.size} bytes, expected step x height = {step * h}")
    pixels = data.reshape(h, step)[:, :row].reshape(h, w, channels)
    if order is None:
        return np.repeat(pixels, 3, axis=2)
    if order == (0, 1, 2) and channels == 3:
        return pixels  # zero-copy view on the message buffer
    return np.ascontiguousarray(pixels[:, :, list(order)])


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    fmt = msg.format.lower()
    if not any(f in fmt for f in COMPRESSED_FORMATS):
        raise ImageError(f"unsupported compressed format {msg.format!r} (supported: jpeg, png)")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size == 0:
        raise ImageError("compressed image holds no data")
    width, height = compressed_size(buf.tobytes())
    if width * height > MAX_PIXELS:  # before decoding: a small file may hold a huge image (decompression bomb)
        raise ImageError(f"compressed image of {width}x{height} exceeds the {MAX_PIXELS}-pixel limit (not decoded)")
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError(f"compressed image ({msg.format}, {buf.size} bytes) could not be decoded")
    if bgr.shape[0] * bgr.shape[1] > MAX_PIXELS:
        raise ImageError(f"decoded image of {bgr.shape[1]}x{bgr.shape[0]} exceeds the pixel limit")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def compressed_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG or JPEG header, without decoding the pixels (Pillow reads headers lazily)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)  # we refuse those ourselves
            with PIL.Image.open(io.BytesIO(data)) as img:
                fmt, size = img.format, img.size
    except PIL.Image.DecompressionBombError as exc:
        raise ImageError(f"compressed image exceeds the {MAX_PIXELS}-pixel limit (not decoded): {exc}") from exc
    except (PIL.UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"compressed image header cannot be read ({exc})") from exc
    if fmt not in ("PNG", "JPEG"):
        raise ImageError(f"compressed image is {fmt}, not PNG or JPEG")
    return size


def rgb_to_image(rgb: np.ndarray, stamp=None, frame_id: str = "camera") -> Image:
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    msg.data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    return msg


def rgb_to_compressed(rgb: np.ndarray, fmt: str = "jpeg", stamp=None) -> CompressedImage:
    ok, buf = cv2.imencode(".png" if fmt == "png" else ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ImageError(f"could not encode {fmt}")
    msg = CompressedImage()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.format = fmt
    msg.data = buf.tobytes()
    return msg
