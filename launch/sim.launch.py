"""The simulated stack: generator + controller + Meta-World sim bridge. `ros2 launch hypervla sim.launch.py`.

Takes every argument of hypervla.launch.py (`--show-args`) and passes it on, with sim:=true."""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource


def generate_launch_description():
    path = os.path.join(get_package_share_directory("hypervla"), "launch", "hypervla.launch.py")
    return LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(path), launch_arguments={"sim": "true"}.items()),
    ])
