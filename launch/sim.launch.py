"""The simulated stack: generator + controller + Meta-World sim bridge. `ros2 launch hypervla sim.launch.py`."""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("hypervla")
    return LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(os.path.join(share, "launch", "hypervla.launch.py"))),
        Node(package="hypervla_ros", executable="sim_bridge", name="sim_bridge",
             parameters=[LaunchConfiguration("params_file")], output="screen"),
    ])
