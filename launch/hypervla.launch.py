"""Generator + controller (+ the Meta-World sim bridge with sim:=true): `ros2 launch hypervla hypervla.launch.py`.

Arguments (`--show-args`): params_file (every node's parameters; default share/hypervla/config/hypervla.yaml),
namespace (every node, topic and service of the suite under it), arms (a fleet: one controller, and sim bridge,
per arm under namespace/<arm>, all served by the one generator), generator / controller (false: this computer
runs only the other half), use_aggregator (a diagnostic_aggregator for rqt_robot_monitor; false where it is not
installed), log_level, and, non-empty to override the params file: signing_key_file, trusted_keys_file,
start_latched, twist_topic, estop_timeout_s.
"""
import os

import yaml

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

SHARE = get_package_share_directory("hypervla")
ARGS = {
    "params_file": (os.path.join(SHARE, "config", "hypervla.yaml"), "parameters YAML for every node"),
    "namespace": ("", "namespace of every node, topic and service (e.g. arm1)"),
    "arms": ("", "comma-separated arm namespaces (arm1,arm2,...): one controller per arm, one shared generator"),
    "generator": ("true", "start the policy generator (false: it runs on another computer)"),
    "controller": ("true", "start the controller(s) (false: this computer only generates)"),
    "use_aggregator": ("true", "start a diagnostic_aggregator (needs the diagnostic_aggregator package)"),
    "log_level": ("info", "log level of every node"),
    "sim": ("false", "also start the Meta-World sim bridge"),
    "signing_key_file": ("", "generator: private key that signs policies ('' = from the params file)"),
    "trusted_keys_file": ("", "controller: trusted public keys ('' = from the params file)"),
    "start_latched": ("", "controller: start with the e-stop latched ('' = from the params file)"),
    "twist_topic": ("", "controller: TwistStamped output for a servo driver ('' = from the params file)"),
    "estop_timeout_s": ("", "controller: a periodic e-stop state is required this often ('' = from the params file)"),
}
GENERATOR_OVERRIDES = ("signing_key_file",)
CONTROLLER_OVERRIDES = ("trusted_keys_file", "start_latched", "twist_topic", "estop_timeout_s")


def _value(text: str):
    if text in ("true", "false"):
        return text == "true"
    try:
        return float(text) if "." in text else text
    except ValueError:
        return text


def _generator_service(params_file: str) -> str:
    with open(params_file) as f:
        cfg = yaml.safe_load(f) or {}
    return cfg.get("policy_generator", {}).get("ros__parameters", {}).get("service_name", "hypervla/generate_policy")


def _nodes(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name in ARGS}
    params, ns = arg["params_file"], arg["namespace"]
    ros_args = ["--ros-args", "--log-level", arg["log_level"]]
    if arg["use_aggregator"] == "true":  # checked before anything starts: a failed launch leaves no process behind
        try:
            get_package_share_directory("diagnostic_aggregator")
        except Exception as exc:
            raise RuntimeError("package 'diagnostic_aggregator' not found: install it "
                               "(ros-<distro>-diagnostic-aggregator) or launch with use_aggregator:=false") from exc
    # A suite node that exits (a bad params file, a missing checkpoint) stops the launch: no half-running stack.
    stop = Shutdown(reason="a hypervla node exited")

    def overrides(names):
        return {n: _value(arg[n]) for n in names if arg[n] != ""}

    nodes = []
    if arg["generator"] == "true":
        nodes.append(Node(package="hypervla_ros", executable="policy_generator", name="policy_generator",
                          namespace=ns, parameters=[params, overrides(GENERATOR_OVERRIDES)], arguments=ros_args,
                          output="screen", on_exit=stop))
    arms = [a.strip().strip("/") for a in arg["arms"].split(",") if a.strip().strip("/")]
    controller_params = overrides(CONTROLLER_OVERRIDES)
    if arms:  # every arm asks the one generator, outside the arm's namespace
        service = _generator_service(params)
        controller_params["generator_service"] = service if service.startswith("/") else \
            "/" + "/".join(p for p in (ns.strip("/"), service) if p)
    for arm_ns in [f"{ns.rstrip('/')}/{a}" for a in arms] or [ns]:
        if arg["controller"] == "true":
            nodes.append(Node(package="hypervla_ros", executable="policy_controller", name="policy_controller",
                              namespace=arm_ns, parameters=[params, controller_params], arguments=ros_args,
                              output="screen", on_exit=stop))
        if arg["sim"] == "true":
            nodes.append(Node(package="hypervla_ros", executable="sim_bridge", name="sim_bridge", namespace=arm_ns,
                              parameters=[params], arguments=ros_args, output="screen", on_exit=stop))
    if arg["use_aggregator"] == "true":
        nodes.append(Node(package="diagnostic_aggregator", executable="aggregator_node", name="diagnostic_aggregator",
                          namespace=ns, parameters=[os.path.join(SHARE, "config", "diagnostics_analyzers.yaml")],
                          output="screen"))
    return nodes


def generate_launch_description():
    return LaunchDescription([
        *[DeclareLaunchArgument(name, default_value=default, description=text) for name, (default, text) in ARGS.items()],
        SetEnvironmentVariable("HYPERVLA_CONFIG", LaunchConfiguration("params_file")),  # the nodes' defaults
        OpaqueFunction(function=_nodes),
    ])
