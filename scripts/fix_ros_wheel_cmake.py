"""Point the ROS 2 wheels' exported CMake files at this interpreter's include dirs.

The PyPI wheels were built in a manylinux container; their *Export.cmake files name that
container's Python and numpy include paths (/opt/python/cp311-cp311/...), which do not exist
here, so any rosidl package built against them fails to configure. Idempotent.
"""
import pathlib
import re
import sys
import sysconfig

import numpy

PY_INCLUDE = re.compile(r"/opt/python/cp3\d+-cp3\d+/include/python3\.\d+")
NP_INCLUDE = re.compile(r"/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/_core/include")


def main() -> int:
    share = pathlib.Path(sys.prefix) / "share"
    fixed = 0
    for path in share.glob("*/cmake/*.cmake"):
        text = path.read_text()
        if "/opt/python/" not in text:
            continue
        new = NP_INCLUDE.sub(numpy.get_include(), text)
        new = PY_INCLUDE.sub(sysconfig.get_paths()["include"], new)
        if new != text:
            path.write_text(new)
            fixed += 1
    print(f"fix_ros_wheel_cmake: rewrote {fixed} file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
