"""Image conversion written with numpy, cross-checked against rosbags-image on the same messages."""
import numpy as np
import pytest
from hypervla_ros.image_conversion import (
    ImageError,
    compressed_to_rgb,
    image_to_rgb,
    rgb_to_compressed,
    rgb_to_image,
)
from rclpy.serialization import serialize_message
from rosbags.image import message_to_cvimage
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CompressedImage, Image

TYPESTORE = get_typestore(Stores.ROS2_KILTED) if hasattr(Stores, "ROS2_KILTED") else get_typestore(Stores.LATEST)
RNG = np.random.default_rng(0)


def _msg(rgb: np.ndarray, encoding: str, pad: int = 0) -> Image:
    chans = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "rgba8": np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]),
             "bgra8": np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 7, np.uint8)]),
             "mono8": rgb[..., :1]}[encoding]
    h, w, c = chans.shape
    rows = np.zeros((h, w * c + pad), np.uint8)
    rows[:, : w * c] = chans.reshape(h, w * c)
    return Image(height=h, width=w, encoding=encoding, step=w * c + pad, data=rows.tobytes())


def _rosbags_rgb(msg: Image) -> np.ndarray:
    """Decode the same bytes with rosbags-image (after a trip through CDR, as from a bag)."""
    ros = TYPESTORE.deserialize_cdr(serialize_message(msg), "sensor_msgs/msg/Image")
    return message_to_cvimage(ros, "rgb8")


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
@pytest.mark.parametrize("pad", [0, 5])
def test_encodings_match_rosbags_image(encoding, pad):
    rgb = RNG.integers(0, 255, (6, 9, 3), dtype=np.uint8)
    if encoding == "mono8":
        rgb = np.repeat(rgb[..., :1], 3, axis=2)
    msg = _msg(rgb, encoding, pad)
    ours = image_to_rgb(msg)
    np.testing.assert_array_equal(ours, rgb)
    if pad == 0:  # rosbags-image assumes tightly packed rows
        np.testing.assert_array_equal(ours, _rosbags_rgb(msg))


def test_round_trip_and_compressed():
    rgb = RNG.integers(0, 255, (32, 40, 3), dtype=np.uint8)
    np.testing.assert_array_equal(image_to_rgb(rgb_to_image(rgb)), rgb)
    np.testing.assert_array_equal(compressed_to_rgb(rgb_to_compressed(rgb, "png")), rgb)
    jpeg = compressed_to_rgb(rgb_to_compressed(np.full((32, 40, 3), 120, np.uint8), "jpeg"))
    assert np.abs(jpeg.astype(int) - 120).max() <= 3


@pytest.mark.parametrize("mutate,match", [
    (lambda m: setattr(m, "encoding", "yuv422"), "unsupported image encoding"),
    (lambda m: setattr(m, "encoding", "16UC1"), "unsupported image encoding"),
    (lambda m: setattr(m, "data", m.data[:-1]), "data holds"),
    (lambda m: setattr(m, "step", 3), "step 3 is smaller"),
    (lambda m: (setattr(m, "height", 0), setattr(m, "width", 0)), "empty image"),
    (lambda m: (setattr(m, "height", 100000), setattr(m, "width", 100000)), "exceeds"),
])
def test_bad_images_are_rejected_with_a_reason(mutate, match):
    msg = _msg(RNG.integers(0, 255, (4, 4, 3), dtype=np.uint8), "rgb8")
    mutate(msg)
    with pytest.raises(ImageError, match=match):
        image_to_rgb(msg)


def test_bad_compressed_images_are_rejected():
    with pytest.raises(ImageError, match="header cannot be read"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b"\xff\xd8garbage"))
    import cv2

    ok, png = cv2.imencode(".png", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ImageError, match="could not be decoded"):  # a valid header, then garbage
        data = png.tobytes()
        compressed_to_rgb(CompressedImage(format="png", data=data[:data.index(b"IDAT") + 6] + b"\0" * 20))
    with pytest.raises(ImageError, match="no data"):
        compressed_to_rgb(CompressedImage(format="png", data=b""))
    with pytest.raises(ImageError, match="unsupported compressed format"):
        compressed_to_rgb(CompressedImage(format="tiff", data=b"1234"))


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=150, deadline=None)
@given(h=st.integers(1, 20), w=st.integers(1, 20), pad=st.integers(0, 7),
       encoding=st.sampled_from(["rgb8", "bgr8", "rgba8", "bgra8", "mono8"]), seed=st.integers(0, 2**31))
def test_property_any_valid_layout_decodes_exactly(h, w, pad, encoding, seed):
    rgb = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    if encoding == "mono8":
        rgb = np.repeat(rgb[..., :1], 3, axis=2)
    np.testing.assert_array_equal(image_to_rgb(_msg(rgb, encoding, pad)), rgb)


@settings(max_examples=150, deadline=None)
@given(h=st.integers(0, 40), w=st.integers(0, 40), step=st.integers(0, 200), n=st.integers(0, 3000),
       encoding=st.sampled_from(["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "yuv422", "32FC1", ""]))
def test_property_arbitrary_headers_never_crash(h, w, step, n, encoding):
    msg = Image(height=h, width=w, step=step, encoding=encoding, data=bytes(n))
    try:
        out = image_to_rgb(msg)
    except ImageError:
        return
    assert out.shape == (h, w, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("ext,fmt", [(".png", "png"), (".jpg", "jpeg")])
def test_compressed_bombs_are_refused_from_the_header_without_decoding(ext, fmt, monkeypatch):
    import cv2

    from hypervla_ros import image_conversion

    ok, buf = cv2.imencode(ext, np.zeros((5000, 5000, 3), np.uint8))
    decoded = []
    monkeypatch.setattr(image_conversion.cv2, "imdecode", lambda *a: decoded.append(1))
    with pytest.raises(ImageError, match=r"5000x5000 exceeds .*\(not decoded\)"):
        compressed_to_rgb(CompressedImage(format=fmt, data=buf.tobytes()))
    assert decoded == []  # refused before any pixel was decoded
    ok, gif = cv2.imencode(".bmp", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ImageError, match="not PNG or JPEG"):
        compressed_to_rgb(CompressedImage(format="png", data=gif.tobytes()))
