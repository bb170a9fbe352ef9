"""Bare-transport reference for the benchmark: echoes each camera frame's header straight back.

Same process layout as the suite (separate process, rclpy, Fast DDS), no conversion, no model, so
camera->echo time is what ROS transport alone costs for that image size.
"""
import rclpy
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header


def main():
    rclpy.init()
    node = Node("bench_echo")
    pub = node.create_publisher(Header, "/bench/echo", 100)
    node.create_subscription(Image, "/bench/camera", lambda m: pub.publish(m.header), qos_profile_sensor_data)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
