"""ROS 2 nodes of the HyperVLA suite."""
