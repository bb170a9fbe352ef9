"""demonstrator: a scripted teleoperator for the LIBERO bridge, over the same topics a person would use.

For each task and init state it sets the bridge's init_index, publishes the task's instruction (the bridge
resets), then answers every frame with an EndEffectorAction from a scripted expert (hypervla_core.
libero_experts) computed on a shadow copy of the scene (the bridge's privileged ~/sim_state, physics only).
With `noise` the action sent is pushed off course (DART-style, hypervla_core.libero_experts.Push) and the
expert's clean action goes to ~/expert_action with the same stamp, which bag-to-dataset records as the action.
An expert that runs out of phases before the goal gives up with ~/reset: the bridge marks the attempt
aborted, and bag-to-dataset drops it. Record the bag with `record` meanwhile.
"""
from __future__ import annotations

import json

import numpy as np
from hypervla_core.libero_env import LiberoArm, LiberoConfig
from hypervla_core.libero_data import expert_noise
from hypervla_core.libero_experts import PLANS, Expert, Push
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import Trigger

from hypervla_msgs.msg import EndEffectorAction

from .node_config import LATCHED, declare, init_index_request, node_defaults
from .node_runtime import run
from .policy_msgs import action_msg

SCHEMA = {
    "suite": ("LIBERO suite of the bridge", None),
    "bridge": ("the bridge node's name (its ~/sim_state, ~/events, ~/reset, init_index)", None),
    "tasks": ("task names to demonstrate ([] = every scripted one)", None),
    "episodes_per_task": ("attempts per task, init states first_init, first_init + 1, ...", (1, 10000)),
    "first_init": ("init index of each task's first attempt (from 1000: sampled placements, never the standard "
                   "initial states evaluation uses)", (0, 10**9)),
    "noise": ("std of the push on the executed translation (m per step; a goal's expert_noise in "
              "config/libero_tasks.yaml overrides it), as gen-data --noise", (0.0, 0.05)),
    "seed": ("noise seed (each task draws from [seed, task index], as gen-data)", (0, 2**31)),
    "instruction_topic": ("std_msgs/String instruction output", None),
    "action_topic": ("hypervla_msgs/EndEffectorAction output", None),
    "exit_when_done": ("shut down after the last attempt", None),
}


class DemonstratorNode(Node):
    def __init__(self):
        super().__init__("demonstrator")
        p = self.p = declare(self, SCHEMA, node_defaults("demonstrator"))
        self.shadow = LiberoArm(LiberoConfig(suite=p["suite"], cameras=()))
        tasks = list(p["tasks"]) or [t for t in self.shadow.task_names if t in PLANS]
        unknown = [t for t in tasks if t not in PLANS]
        if unknown:
            raise ValueError(f"no scripted expert for {unknown}; scripted: {sorted(PLANS)}")
        self.queue = [(t, p["first_init"] + k) for t in tasks for k in range(p["episodes_per_task"])]
        self.noise = {t: expert_noise(t, p["noise"]) for t in tasks}  # read once, not at every attempt's reset
        self.rngs: dict[str, np.random.Generator] = {}
        self.expert = None
        self.attempt = None
        self.results: list[dict] = []
        bridge = p["bridge"]
        self.action_pub = self.create_publisher(EndEffectorAction, p["action_topic"], 1)
        self.label_pub = self.create_publisher(EndEffectorAction, "~/expert_action", 10)
        self.instruction_pub = self.create_publisher(String, p["instruction_topic"], LATCHED)
        self.create_subscription(String, f"/{bridge}/sim_state", self.on_state, 1)
        self.create_subscription(String, f"/{bridge}/events", self.on_event, LATCHED)
        self.params = self.create_client(SetParameters, f"/{bridge}/set_parameters")
        self.reset_client = self.create_client(Trigger, f"/{bridge}/reset")
        self.create_timer(0.5, self.start_next_if_idle)
        self.get_logger().info(f"demonstrating {len(self.queue)} attempts of {tasks}")

    def start_next_if_idle(self) -> None:
        if self.attempt is not None or not self.params.service_is_ready():
            return
        if not self.queue:
            if self.p["exit_when_done"]:
                self.get_logger().info(f"done: {sum(r['success'] for r in self.results)}/{len(self.results)} "
                                       "successful")
                raise SystemExit(0)
            return
        task, init = self.queue.pop(0)
        self.attempt = {"task": task, "init_index": init, "started": False}
        future = self.params.call_async(init_index_request(init))
        future.add_done_callback(lambda _f, t=task: self.instruction_pub.publish(
            String(data=self.shadow.tasks[self.shadow.task_index_of(t)].language)))

    def on_event(self, msg: String) -> None:
        event = json.loads(msg.data)
        a = self.attempt
        if a is None:
            return
        if event["event"] == "reset" and event.get("task") == a["task"] and event.get("init_index") == a["init_index"]:
            a["started"] = True
            self.shadow.set_task(a["task"])
            self.expert = Expert(self.shadow, a["task"])
            rng = self.rngs.setdefault(a["task"], np.random.default_rng([self.p["seed"],
                                                                         self.shadow.task_index_of(a["task"])]))
            self.push = Push(self.noise[a["task"]], rng)
            self.last = (None, None, None)  # (sim time, clean action, executed action) of the last decision
        elif event["event"] != "reset" and a["started"]:
            self.results.append({**a, "success": bool(event.get("success")), "event": event["event"]})
            self.get_logger().info(f"{a['task']} init {a['init_index']}: {event['event']}")
            self.attempt, self.expert = None, None

    def on_state(self, msg: String) -> None:
        if self.expert is None:
            return
        body = json.loads(msg.data)
        if body["task"] != self.attempt["task"]:
            return
        sim_time = body["state"][0]
        if sim_time == self.last[0]:  # the bridge re-sent a frame while waiting: same scene, same decision
            _, action, executed = self.last
        else:
            obs = self.shadow.load_state(body["state"], fixtures=body["fixtures"])
            if self.expert.done:  # out of phases without the goal: give up (the bridge marks it aborted)
                self.expert = None
                self.reset_client.call_async(Trigger.Request())
                return
            action = self.expert.act(obs)
            executed = self.push(action)
            self.last = (sim_time, action, executed)
        self.label_pub.publish(action_msg(action, body["stamp"], "demonstrator"))
        self.action_pub.publish(action_msg(executed, body["stamp"], "demonstrator"))

    def close(self) -> None:
        self.shadow.close()


def main(args=None):
    run(DemonstratorNode, "demonstrator", args)


if __name__ == "__main__":
    main()
