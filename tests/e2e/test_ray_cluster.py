"""What only the Ray backend does: a live rescale starts actors for the new tasks and
stops those left without tasks; steps' resource requests reach the actors; a cluster
that cannot host the job refuses it at once with what it lacks."""

import time

import psutil
import pytest

import rheostat as rs

STEP = "counts"


def keyed(out, events, rate):
    flow = rs.Flow("ray-elastic")
    ev = flow.source("ev", rs.sources.synthetic(events=events, keys=2000, seed=8,
                                                 events_per_ms=20),
                     timestamp="ts", out_of_order="1s", rate=rate, parallelism=2)
    (ev.key_by("key").window(rs.windows.tumbling("1s"))
       .aggregate(name=STEP, n=rs.agg.count(), hi=rs.agg.max("value"))
       .sink("out", out))
    return flow


def rows(sink):
    return sorted(tuple(r.values()) for r in sink.to_pylist())


def alive(pid):
    return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


def test_a_live_rescale_starts_and_stops_actors_and_keeps_the_output(ray_cluster):
    reference = rs.sinks.collect()
    rs.run(keyed(reference, 300_000, None), backend="inline")
    out = rs.sinks.collect()
    job = rs.start(keyed(out, 300_000, 20_000), backend="ray", parallelism=2,
                   reconfig_batch_groups=0)  # one stage each: the input lasts 15 s
    backend = job.controller.backend
    assert job.rescale(STEP, 4)["status"] == "done"
    placed = job.sql("select task_id, worker from tasks where task_id like 'counts#%' "
                     "order by task_id").to_pylist()
    assert [r["worker"] for r in placed] == [0, 1, 2, 3]  # a new actor for each new task
    new_pids = [backend.workers_info[w]["pid"] for w in (2, 3)]
    assert all(alive(p) for p in new_pids)
    assert job.rescale(STEP, 2)["status"] == "done"
    deadline = time.monotonic() + 60
    while job.controller.worker_ids != [0, 1] and time.monotonic() < deadline:
        time.sleep(0.05)  # released once their retired tasks have finished
    assert job.controller.worker_ids == [0, 1]
    result = job.wait()
    assert result.state == "finished"
    assert rows(out) == rows(reference)
    deadline = time.monotonic() + 30
    while any(alive(p) for p in new_pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in new_pids)


def test_a_steps_resources_reach_the_actor_hosting_its_task(ray_cluster):
    flow = rs.Flow("ray-resources")
    (flow.source("rows", rs.testing.rows([{"i": i} for i in range(1000)], batch_size=100))
       .rebalance().map(lambda r: r, name="embed").with_resources(test_accelerator=1)
       .sink("out", rs.sinks.null()))
    job = rs.start(flow, backend="ray", parallelism=1, workers=2)
    job.wait()
    placed = {r["task_id"]: r["worker"] for r in job.sql("select * from tasks").to_pylist()}
    embed_task = next(t for t in placed if t.startswith("embed"))
    info = job.controller.backend.workers_info
    assert info[placed[embed_task]]["resources"].get("test_accelerator") == 1.0
    others = [w for w in info if w != placed[embed_task]]
    assert all("test_accelerator" not in info[w]["resources"] for w in others)


def test_a_cluster_too_small_for_the_job_refuses_it_with_what_it_lacks(ray_cluster):
    from rheostat.backends.ray.backend import RayBackend

    flow = rs.Flow("ray-too-big")
    (flow.source("rows", rs.testing.rows([{"i": 1}]))
       .map(lambda r: r, name="huge").with_resources(test_accelerator=5)
       .sink("out", rs.sinks.null()))
    with pytest.raises(rs.BackendUnavailable, match="test_accelerator"):
        rs.run(flow, backend=RayBackend(schedule_timeout_s=2), parallelism=1)


def test_a_task_placed_on_a_node_gets_a_new_actor_there(ray_cluster):
    reference = rs.sinks.collect()
    flow_ref = rs.Flow("ray-node")
    unchained(flow_ref, reference, None)
    rs.run(flow_ref, backend="inline")
    out = rs.sinks.collect()
    flow = rs.Flow("ray-node")
    unchained(flow, out, 30_000)
    job = rs.start(flow, backend="ray", parallelism=2, workers=2)
    node = ray_cluster.nodes()[0]
    with pytest.raises(rs.ReconfigError, match="no live node 'nowhere'"):
        job.place(f"{STEP}#1", node="nowhere")
    assert job.place(f"{STEP}#1", node=node["NodeManagerAddress"])["status"] == "done"
    worker = job.sql(f"select worker from tasks where task_id = '{STEP}#1'").column(0)[0]
    info = job.controller.backend.workers_info[worker.as_py()]
    assert worker.as_py() >= 2 and info["node_id"] == node["NodeID"]
    job.wait()
    assert rows(out) == rows(reference)


def unchained(flow, out, rate):
    ev = flow.source("ev", rs.sources.synthetic(events=200_000, keys=2000, seed=9,
                                                 events_per_ms=20),
                     timestamp="ts", out_of_order="1s", rate=rate, parallelism=2)
    (ev.key_by("key").window(rs.windows.tumbling("1s"))
       .aggregate(name=STEP, n=rs.agg.count())
       .sink("out", out, parallelism=1))
