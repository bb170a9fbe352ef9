"""The MuJoCo sim bridge with the controller and generator: real Meta-World physics and rendering over DDS."""
import json

from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from hypervla_core.sim import camera_views, load_tasks
from hypervla_ros.bringup import Stack
from hypervla_ros.node_config import LATCHED
from ros_helpers import Probe, Spinner, wait_until, write_config


def test_episode_runs_end_to_end_and_resets(ros, tmp_path, tiny_checkpoints):
    config = write_config(tmp_path, tiny_checkpoints["hypervla"],
                          sim_bridge={"real_time": False, "max_steps": 15})
    with Stack(config, log_dir=str(tmp_path / "logs")) as stack:
        stack.start("generator", "controller", "sim")
        probe = Probe("sim_probe")
        events, frames = [], []
        probe.create_subscription(String, "/sim_bridge/events", lambda m: events.append(json.loads(m.data)), LATCHED)
        probe.create_subscription(Image, "/camera/image_raw", frames.append, qos_profile_sensor_data)
        reset = probe.create_client(Trigger, "/sim_bridge/reset")
        spinner = Spinner(probe)
        try:
            probe.say("open the drawer")  # the bridge picks drawer-open-v3 from the phrasing
            assert wait_until(lambda: any(e["event"] == "timeout" for e in events), 120), events
            start = next(e for e in events if e["event"] == "reset")
            end = next(e for e in events if e["event"] == "timeout")
            assert start["task"] == end["task"] == "drawer-open-v3"
            assert end["steps"] == 15 and end["e2e_samples"] >= 10
            views = len(camera_views(None, load_tasks()))  # the tasks file's default, tiled side by side
            assert frames and frames[-1].width == 64 * views and frames[-1].height == 64
            assert frames[-1].encoding == "rgb8"
            # every step was driven by an action from the controller, stamped with the frame it came from
            assert len(probe.actions) >= 15
            assert reset.wait_for_service(10)
            fut = reset.call_async(Trigger.Request())
            assert wait_until(fut.done, 10) and fut.result().success
            assert json.loads(fut.result().message)["seed"] == start["seed"] + 1
            assert stack.alive("sim")
        finally:
            spinner.close()
