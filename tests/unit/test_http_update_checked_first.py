"""An ``update`` imports its function's module (running its code) only once the whole
request has been read and checked against the job's steps."""

import sys

import pytest
from http_calls import ADMIN, READ, Endless, call, wait_for_api

import rheostat as rs
from rheostat.control.reconfig_json import ops_from_json

STEPS = {"s": "source", "enrich": "map", "o": "sink"}


@pytest.fixture
def sneaky(tmp_path, monkeypatch):
    """A module whose import leaves a mark: (its name, the mark)."""
    name = f"sneaky_{tmp_path.name.replace('-', '_')}"
    mark = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(
        f"open({str(mark)!r}, 'w').close()\n\ndef enrich(row):\n    return row\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, mark
    sys.modules.pop(name, None)


GOOD = [{"op": "update", "step": "enrich", "function": "{m}:enrich"}]
REFUSED = [
    ([{"op": "update", "step": "nope", "function": "{m}:enrich"}], "no step 'nope'"),
    ([{"op": "update", "step": "s", "function": "{m}:enrich"}], "has no function to update"),
    ([{"op": "update", "step": "enrich", "function": "{m}:enrich"},
      {"op": "rescale", "step": "nope", "parallelism": 2}], "op 1 (rescale)"),
    ([{"op": "update", "step": "enrich", "function": "{m}:enrich"},
      {"op": "knob", "step": "enrich", "name": "not an identifier", "value": 1}],
     "op 1 (knob)"),
]


def fill(ops, module):
    return [{k: v.format(m=module) if isinstance(v, str) else v for k, v in op.items()}
            for op in ops]


@pytest.mark.parametrize(("ops", "reason"), REFUSED)
def test_ops_from_json_checks_everything_before_it_imports(sneaky, ops, reason):
    module, mark = sneaky
    with pytest.raises(ValueError) as err:
        ops_from_json(fill(ops, module), steps=STEPS)
    assert reason in str(err.value)
    assert not mark.exists() and module not in sys.modules
    (op,) = ops_from_json(fill(GOOD, module), steps=STEPS)
    assert mark.exists() and op.function.__name__ == "enrich"


def test_the_api_refuses_before_importing_and_imports_a_good_update(tmp_path, sneaky):
    module, mark = sneaky
    flow = rs.Flow("upd")
    (flow.source("s", Endless(tmp_path / "release")).map(lambda r: r, name="enrich")
        .sink("o", rs.sinks.null()))
    job = rs.start(flow, backend="inline", http_port=0,
                   http_tokens={"admin": ADMIN, "read": READ})
    try:
        url = wait_for_api(job) + "/v1/reconfigure"
        refused = [call(url, ADMIN, "POST", {"ops": fill(ops, module)})
                   for ops, _ in REFUSED]
        system = call(url, ADMIN, "POST",
                      {"ops": [{"op": "update", "step": "s", "function": "os:system"}]})
        imported_before = mark.exists()
        read_only = call(url, READ, "POST", {"ops": fill(REFUSED[0][0], module)})
        done = call(url, ADMIN, "POST", {"ops": fill(GOOD, module)})
    finally:
        (tmp_path / "release").touch()
    job.wait(timeout=120)
    assert not imported_before
    for (status, body), (_, reason) in zip(refused, REFUSED, strict=True):
        assert status == 400 and reason in body["error"], body
    assert system[0] == 400 and "has no function to update" in system[1]["error"]
    assert read_only[0] == 403
    assert done[0] == 200, done
    assert mark.exists()
