"""Run by test_ray_two_nodes.py in a process of its own: a Ray cluster of two nodes on
this machine (``ray.cluster_utils.Cluster``), a job spread over both, a task placed on
the other node, then that node removed. Prints one JSON line with what happened."""

import json
import sys
import time

import ray
from ray.cluster_utils import Cluster

import rheostat as rs
from rheostat.backends.ray.backend import RayBackend

STEP = "counts"


def flow(out, rate):
    f = rs.Flow("two-nodes")
    ev = f.source("ev", rs.sources.synthetic(events=300_000, keys=2000, seed=3,
                                              events_per_ms=20),
                  timestamp="ts", out_of_order="1s", rate=rate, parallelism=2)
    (ev.key_by("key").window(rs.windows.tumbling("1s"))
       .aggregate(name=STEP, n=rs.agg.count(), hi=rs.agg.max("value"))
       .sink("out", out))
    return f


def rows(sink):
    return sorted(tuple(r.values()) for r in sink.to_pylist())


def wait_until(condition, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the job did not get there")
        time.sleep(0.05)


def main(checkpoint_dir: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4})
    second = cluster.add_node(num_cpus=4)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    reference = rs.sinks.collect()
    rs.run(flow(reference, None), backend="inline")
    out = rs.sinks.collect()
    job = rs.start(flow(out, 40_000), backend=RayBackend(placement_strategy="SPREAD"),
                   parallelism=2, workers=2, checkpoint_interval="200ms",
                   checkpoint_dir=checkpoint_dir,
                   restart=rs.RestartPolicy(attempts=3, backoff_s=0.1))
    backend = job.controller.backend
    wait_until(lambda: len(backend.workers_info) == 2 and job.sql(
        "select count(*) from checkpoints where state = 'completed'").column(0)[0].as_py())
    spread = sorted(i["node_id"] for i in backend.workers_info.values())
    task = f"{STEP}#0"
    placed = job.place(task, node=second.node_id)["status"]
    worker = job.sql(f"select worker from tasks where task_id = '{task}'").column(0)[0]
    on_node = backend.workers_info[worker.as_py()]["node_id"]
    cluster.remove_node(second)
    result = job.wait()
    print(json.dumps({
        "spread_over": len(set(spread)), "placed": placed,
        "placed_on_second": on_node == second.node_id, "restarts": result.restarts,
        "same_output": rows(out) == rows(reference), "rows": len(rows(reference)),
    }))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
