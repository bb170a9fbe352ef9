"""Generator + controller on a full ROS 2 install: `ros2 launch hypervla hypervla.launch.py`.

Parameters come from config/hypervla.yaml (override with params_file:=...). A diagnostic_aggregator with
config/diagnostics_analyzers.yaml groups the suite for rqt_robot_monitor.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("hypervla")
    params = LaunchConfiguration("params_file")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "hypervla.yaml"),
                              description="parameters YAML for every node"),
        # The nodes read their defaults from the same file.
        SetEnvironmentVariable("HYPERVLA_CONFIG", params),
        Node(package="hypervla_ros", executable="policy_generator", name="policy_generator",
             parameters=[params], output="screen"),
        Node(package="hypervla_ros", executable="policy_controller", name="policy_controller",
             parameters=[params], output="screen"),
        Node(package="diagnostic_aggregator", executable="aggregator_node", name="diagnostic_aggregator",
             parameters=[os.path.join(share, "config", "diagnostics_analyzers.yaml")], output="screen"),
    ])
