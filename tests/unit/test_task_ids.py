"""Typed task ids: parsing, building, and staying interchangeable with the plain string."""

from __future__ import annotations

import copy
import json
import pickle

import cloudpickle
import pytest

from rheostat.plan.ids import CheckpointId, TaskId
from rheostat.plan.logical import Input, Port, SinkStep, SourceStep
from rheostat.plan.physical import lower
from rheostat.protocol import CheckpointId as ProtocolCheckpointId
from rheostat.protocol import TaskId as ProtocolTaskId


def test_parses_chain_and_index() -> None:
    t = TaskId("ev.aggregate#3")
    assert (t.chain, t.index) == ("ev.aggregate", 3)
    assert TaskId("a#b#12").chain == "a#b"  # the last '#' splits
    assert TaskId("a#b#12").index == 12


def test_of_builds_the_same_id() -> None:
    t = TaskId.of("src.map", 0)
    assert type(t) is TaskId
    assert t == "src.map#0" == TaskId("src.map#0")
    assert (t.chain, t.index) == ("src.map", 0)


@pytest.mark.parametrize("text", ["ev.aggregate", "ev#", "#3", "ev#x", "ev#-1", "ev#03",
                                  "ev# 3", "ev#3 ", "ev#³", ""])
def test_rejects_a_string_without_chain_and_index(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a task id: a task id is '<chain_id>#<index>'"):
        TaskId(text)


@pytest.mark.parametrize("index", [-1, 1.0, "1", True])
def test_of_rejects_a_bad_index(index: object) -> None:
    with pytest.raises(ValueError, match="a number >= 0"):
        TaskId.of("src", index)  # type: ignore[arg-type]


def test_a_task_id_is_the_plain_string() -> None:
    t = TaskId("w#1")
    assert isinstance(t, str)
    assert t == "w#1" and hash(t) == hash("w#1")
    assert {"w#1": 5}[t] == 5 and {t: 5}["w#1"] == 5
    assert repr(t) == "'w#1'" and f"{t}/state" == "w#1/state"
    assert json.loads(json.dumps({t: [t]})) == {"w#1": ["w#1"]}
    assert TaskId(t) is t


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_keeps_the_type(protocol: int) -> None:
    back = pickle.loads(pickle.dumps(TaskId("w#1"), protocol))
    assert type(back) is TaskId and back == "w#1" and back.index == 1


def test_cloudpickle_and_copy_keep_the_type() -> None:
    for back in (cloudpickle.loads(cloudpickle.dumps(TaskId("w#1"))),
                 copy.copy(TaskId("w#1")), copy.deepcopy({TaskId("w#1"): 1})):
        key = next(iter(back)) if isinstance(back, dict) else back
        assert type(key) is TaskId and key.chain == "w"


def test_the_plan_makes_typed_ids() -> None:
    steps = (SourceStep("src", ()), SinkStep("out", (Input(Port("src")),), parallelism=3))
    plan = lower(steps, parallelism=2)
    assert plan.task_ids == ["src#0", "src#1", "out#0", "out#1", "out#2"]
    assert all(type(t) is TaskId for t in plan.task_ids)
    assert all(type(c.src_task) is TaskId and type(c.dst_task) is TaskId
               for c in plan.channels)
    assert plan.chains[1].task_id(2).index == 2


def test_protocol_re_exports_the_ids() -> None:
    assert ProtocolTaskId is TaskId and ProtocolCheckpointId is CheckpointId
    assert CheckpointId(3) == 3  # a plain int at run time
