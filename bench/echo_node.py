"""Bare-transport reference for the benchmark: echoes each camera frame's header straight back.

Same process layout as the suite (separate process, rclpy, Fast DDS), no conversion, no model, so
camera->echo time is what ROS transport alone costs for that image size.
"""
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from hypervla_ros.node_runtime import run


class EchoNode(Node):
    def __init__(self):
        super().__init__("bench_echo")
        for suffix in ("", "2"):  # a second camera for the two-topic figure
            pub = self.create_publisher(Header, f"/bench/echo{suffix}", 100)
            self.create_subscription(Image, f"/bench/camera{suffix}", lambda m, p=pub: p.publish(m.header),
                                     qos_profile_sensor_data)


if __name__ == "__main__":
    run(EchoNode, "bench_echo")
