"""The simulated stack: generator + controller + Meta-World sim bridge. `ros2 launch hypervla sim.launch.py`.

Takes every argument of hypervla.launch.py (`--show-args`) and passes it on, with sim:=true. Everything runs on
this computer, so DDS discovery stays on it (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST unless already set)."""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription, SetEnvironmentVariable
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import EnvironmentVariable


def generate_launch_description():
    path = os.path.join(get_package_share_directory("hypervla"), "launch", "hypervla.launch.py")
    return LaunchDescription([
        SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE",
                               EnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", default_value="LOCALHOST")),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(path), launch_arguments={"sim": "true"}.items()),
    ])
