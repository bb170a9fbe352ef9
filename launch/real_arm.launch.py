"""For your own arm's driver: generator + controller, no sim bridge, the e-stop latched at start (a restarted
controller never moves before ~/reset_estop), a periodic e-stop state required (your panel publishes
std_msgs/Bool on hypervla/estop at 10 Hz or more), and the TwistStamped output on in MoveIt Servo's
convention. `ros2 launch hypervla real_arm.launch.py namespace:=arm1`; every hypervla.launch.py argument
(`--show-args`) is taken and passed on."""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource

REAL_ARM = {"sim": "false", "start_latched": "true", "estop_timeout_s": "0.5",
            "twist_topic": "servo_node/delta_twist_cmds"}


def generate_launch_description():
    path = os.path.join(get_package_share_directory("hypervla"), "launch", "hypervla.launch.py")
    return LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(path), launch_arguments=REAL_ARM.items()),
    ])
