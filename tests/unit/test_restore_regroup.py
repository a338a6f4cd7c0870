"""Restoring keyed state under other key-group owners than the checkpoint's.

After a live move, a restart may restore a checkpoint taken before the move: each task
must then find the state of every key group it owns now, whichever old task held it.
"""

import pickle

from rheostat.plan.keygroups import owners_digest
from rheostat.plan.logical import Input, KeyedProcessStep, Port, Routing, SinkStep, SourceStep
from rheostat.plan.physical import lower
from rheostat.plan.reconfig import MoveKeyGroups, Rescale, plan_reconfiguration
from rheostat.runtime.snapshots import build_restores

MAXP = 8


def job_plan():
    steps = (SourceStep("src", ()),
             KeyedProcessStep("p", (Input(Port("src"), Routing("hash", ("k",))),), keys=("k",)),
             SinkStep("out", (Input(Port("p")),)))
    return lower(steps, parallelism=2, max_parallelism=MAXP)


class Point:
    """A checkpoint of ``plan`` in memory: each task of ``p`` holds its own key groups."""

    def __init__(self, plan, extra_tasks=0):
        owners = plan.key_group_owners["p"]
        self.parts = {}
        for i in range(plan.parallelism["p"] + extra_tasks):
            state = {g: f"state-{g}".encode() for g, t in enumerate(owners) if t == i}
            self.parts[f"p#{i}/p"] = pickle.dumps(state)
        self.job = {"parallelism": {"src": 2, "p": plan.parallelism["p"]},
                    "owners": {"p": owners_digest(owners)}}

    @property
    def part_names(self):
        return list(self.parts)

    def read_part(self, name):
        return self.parts[name]


def groups_restored(plan, point):
    restores = build_restores(plan, plan.task_ids, point, point.job["parallelism"])
    out = {}
    for task, restore in restores.items():
        if task.startswith("p#"):
            out[task] = sorted(g for part in restore.states.get("p", []) for g in part)
    return out


def test_a_task_finds_groups_moved_to_it_after_the_checkpoint():
    before = job_plan()
    point = Point(before)
    after = plan_reconfiguration(before, {t: 0 for t in before.task_ids}, 1,
                                 [MoveKeyGroups("p", (0, 1), 1)], 1).plan
    found = groups_restored(after, point)
    owned = {f"p#{i}": [g for g, t in enumerate(after.key_group_owners["p"]) if t == i]
             for i in range(2)}
    for task, groups in owned.items():
        assert set(groups) <= set(found[task])  # the task keeps these, drops the rest


def test_unchanged_owners_read_only_their_own_parts():
    plan = job_plan()
    found = groups_restored(plan, Point(plan))
    assert found == {"p#0": [0, 1, 2, 3], "p#1": [4, 5, 6, 7]}


def test_parts_of_tasks_a_rescale_retired_are_read_too():
    wide = plan_reconfiguration(job_plan(), {}, 1, [Rescale("p", 3)], 1).plan
    point = Point(wide)  # a checkpoint with the final parts of three tasks
    narrow = plan_reconfiguration(wide, {}, 1, [Rescale("p", 2)], 2).plan
    point.job["parallelism"]["p"] = 2  # the manifest of a checkpoint after the rescale
    found = groups_restored(narrow, point)
    retired = [g for g, t in enumerate(wide.key_group_owners["p"]) if t == 2]
    assert retired and all(set(retired) <= set(groups) for groups in found.values())
