from setuptools import find_packages, setup

package_name = "hypervla_ros"
nodes = ["policy_generator", "policy_controller", "sim_bridge", "libero_bridge", "demonstrator", "bag_to_dataset", "bringup", "demo", "record", "replay", "replay_eval"]

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="HyperVLA maintainers",
    maintainer_email="maintainers@hypervla.dev",
    description="ROS 2 nodes of the HyperVLA suite.",
    license="Apache-2.0",
    entry_points={"console_scripts": [f"{n} = {package_name}.{n}:main" for n in nodes]},
)
