"""Reconfiguration operations as JSON: parsing, errors that say what to fix, and back."""

import json
import os.path

import pytest

from rheostat.api.process import KeyedProcess
from rheostat.control.reconfig_json import (
    MAX_GROUPS,
    function_path,
    op_to_json,
    ops_from_json,
    parse_groups,
)
from rheostat.plan.reconfig import MoveKeyGroups, Place, Rescale, SetKnob, UpdateFunction


def test_every_operation_parses():
    ops = ops_from_json([
        {"op": "rescale", "step": "count", "parallelism": 4},
        {"op": "move", "step": "count", "groups": [0, 1, "10-12", "1", " 3 - 4 "], "to_task": 1},
        {"op": "update", "step": "enrich", "function": "json:dumps"},
        {"op": "knob", "step": "score", "name": "threshold", "value": 0.7},
        {"op": "knob", "step": "score", "name": "mode", "value": None},
        {"op": "place", "task": "count#1", "worker": 0},
        {"op": "place_on_node", "task": "count#1", "node": "10.0.0.7"},
    ])
    assert ops == [
        Rescale("count", 4),
        MoveKeyGroups("count", (0, 1, 3, 4, 10, 11, 12), 1),
        UpdateFunction("enrich", json.dumps),
        SetKnob("score", "threshold", 0.7),
        SetKnob("score", "mode", None),
        Place("count#1", 0),
        Place("count#1", node="10.0.0.7"),
    ]


def test_update_resolves_dotted_names_and_keyed_processes():
    (op,) = ops_from_json([{"op": "update", "step": "s", "function": "os.path:join"}])
    assert op.function is os.path.join
    (op,) = ops_from_json([{"op": "update", "step": "s",
                            "function": "rheostat.api.process:KeyedProcess"}])
    assert op.function is KeyedProcess
    (op,) = ops_from_json([{"op": "update", "step": "s",
                            "function": "json:JSONDecoder.decode"}])
    assert op.function is json.JSONDecoder.decode


@pytest.mark.parametrize(("function", "message"), [
    ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
    ("json:no_such_function", "module 'json' has no 'no_such_function'"),
    ("json:JSONDecoder.nope", "no attribute 'nope'"),
    ("json:__doc__", "is a str, not a function"),
    ("json.dumps", '"module.path:function_name"'),
    (":dumps", '"module.path:function_name"'),
    ("json:", '"module.path:function_name"'),
    (7, '"module.path:function_name"'),
])
def test_update_errors_name_the_module_and_function(function, message):
    with pytest.raises(ValueError) as err:
        ops_from_json([{"op": "rescale", "step": "s", "parallelism": 2},
                       {"op": "update", "step": "s", "function": function}])
    assert str(err.value).startswith("op 1 (update): ")
    assert message in str(err.value)


@pytest.mark.parametrize(("items", "message"), [
    (None, "non-empty list of operations"),
    ([], "non-empty list of operations"),
    ({"op": "rescale"}, "non-empty list of operations"),
    (["rescale"], "op 0: must be a JSON object"),
    ([{"step": "s"}], "op 0: \"op\" must be one of ['knob', 'move', 'place', "
                      "'place_on_node', 'rescale', 'update']"),
    ([{"op": "grow"}], "got 'grow'"),
    ([{"op": ["rescale"]}], "op 0: \"op\" must be one of"),
    ([{"op": "rescale", "step": "s"}], "op 0 (rescale): missing ['parallelism']: it takes "
                                       "exactly ['step', 'parallelism']"),
    ([{"op": "rescale", "step": "s", "parallelism": 2, "par": 3}], "unknown ['par']"),
    ([{"op": "rescale", "step": "", "parallelism": 2}], '"step" must be a non-empty string'),
    ([{"op": "rescale", "step": 3, "parallelism": 2}], '"step" must be a non-empty string'),
    ([{"op": "rescale", "step": "s", "parallelism": 0}], '"parallelism" must be an integer >= 1'),
    ([{"op": "rescale", "step": "s", "parallelism": "4"}], "got '4'"),
    ([{"op": "rescale", "step": "s", "parallelism": True}], "got True"),
    ([{"op": "rescale", "step": "s", "parallelism": 2.0}], "got 2.0"),
    ([{"op": "move", "step": "s", "groups": [], "to_task": 0}], '"groups" must be a non-empty'),
    ([{"op": "move", "step": "s", "groups": "0-3", "to_task": 0}], "list of key groups (ints or"),
    ([{"op": "move", "step": "s", "groups": ["5-2"], "to_task": 0}], "got '5-2'"),
    ([{"op": "move", "step": "s", "groups": [-1], "to_task": 0}], "an integer >= 0"),
    ([{"op": "move", "step": "s", "groups": ["a-b"], "to_task": 0}], "got 'a-b'"),
    ([{"op": "move", "step": "s", "groups": ["1-"], "to_task": 0}], "got '1-'"),
    ([{"op": "move", "step": "s", "groups": [True], "to_task": 0}], "got True"),
    ([{"op": "move", "step": "s", "groups": ["9" * 40], "to_task": 0}], "inclusive range"),
    ([{"op": "move", "step": "s", "groups": [f"0-{MAX_GROUPS}"], "to_task": 0}],
     "too many key groups"),
    ([{"op": "move", "step": "s", "groups": [1], "to_task": -1}], '"to_task" must be an integer'),
    ([{"op": "knob", "step": "s", "name": "a b", "value": 1}], "an identifier"),
    ([{"op": "knob", "step": "s", "name": "x", "value": [1]}], "number, string, boolean or null"),
    ([{"op": "knob", "step": "s", "name": "x", "value": {"a": 1}}], "got {'a': 1}"),
    ([{"op": "place", "task": "t#0", "worker": -1}], '"worker" must be an integer >= 0'),
])
def test_bad_input_says_which_op_and_what_to_fix(items, message):
    with pytest.raises(ValueError) as err:
        ops_from_json(items)
    assert message in str(err.value)


def test_the_index_is_of_the_bad_op():
    good = {"op": "rescale", "step": "s", "parallelism": 2}
    with pytest.raises(ValueError, match=r"^op 2 \(place\): "):
        ops_from_json([good, good, {"op": "place", "task": "t#0"}])


def test_parse_groups():
    assert parse_groups("0-3,8") == (0, 1, 2, 3, 8)
    assert parse_groups(" 7 , 2-3, 3 ,") == (2, 3, 7)
    assert len(parse_groups("0-1023,2048")) == 1025
    for bad in ("", " , ", "x", "1-", "-1", "3-1", "1.5"):
        with pytest.raises(ValueError, match="key group"):
            parse_groups(bad)


@pytest.mark.parametrize("op", [
    Rescale("count", 4),
    MoveKeyGroups("count", (0, 1, 2, 5, 9, 10), 1),
    SetKnob("score", "threshold", 0.7),
    Place("count#1", 2),
    Place("count#1", node="node-a"),
    UpdateFunction("enrich", json.dumps),
])
def test_op_to_json_round_trips(op):
    data = op_to_json(op)
    assert json.loads(json.dumps(data)) == data
    assert ops_from_json([data]) == [op]


def test_op_to_json_shapes():
    assert op_to_json(MoveKeyGroups("c", (5, 0, 1, 2), 1)) == {
        "op": "move", "step": "c", "groups": ["0-2", 5], "to_task": 1}
    assert op_to_json(UpdateFunction("e", json.dumps))["function"] == "json:dumps"
    assert function_path(KeyedProcess()) == "rheostat.api.process:KeyedProcess"
    with pytest.raises(TypeError):
        op_to_json("rescale")  # type: ignore[arg-type]
