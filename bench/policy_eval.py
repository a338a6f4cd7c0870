"""How long one evaluation of each policy takes on a 50-task job (goal: under 20 ms).

A source and four steps, 50 tasks in all; the three keyed steps count rows on all 4096 key
groups (Zipf-skewed, as the sensors would report them). Prints one JSON line per policy
with the median and max milliseconds per evaluation over ``--repeat`` runs.
"""

import argparse
import json
import random
import statistics
import time

from rheostat.policy import baselines, rate, skew
from rheostat.policy.snapshot import MetricsSnapshot, StepSample, TaskSample

ap = argparse.ArgumentParser()
ap.add_argument("--tasks-per-step", default="2,12,12,12,12", help="source first, then steps")
ap.add_argument("--key-groups", type=int, default=4096)
ap.add_argument("--zipf", type=float, default=1.0)
ap.add_argument("--repeat", type=int, default=200)
a = ap.parse_args()

rng = random.Random(42)
counts = [int(n) for n in a.tasks_per_step.split(",")]
weights = [1 / (g + 1) ** a.zipf for g in range(a.key_groups)]
rng.shuffle(weights)
total_w = sum(weights)


def step(i: int, n: int, rows: float) -> StepSample:
    sid = "src" if i == 0 else f"s{i}"
    keyed = i >= 2
    owner = tuple(g * n // a.key_groups for g in range(a.key_groups)) if keyed else None
    tasks = []
    for t in range(n):
        groups = ({g: rows * weights[g] / total_w for g in range(a.key_groups) if owner[g] == t}
                  if keyed else None)
        took = sum(groups.values()) if groups else rows / n
        sizes = {g: 1000 for g in groups} if groups else None
        tasks.append(TaskSample(f"{sid}#{t}", took, took * 0.9, min(1.0, took / 900.0),
                                blocked_fraction=rng.uniform(0, 0.1),
                                queued_rows=rng.randint(0, 500), key_group_rows=groups,
                                state_bytes_per_group=sizes))
    upstream = () if i == 0 else ("src" if i == 1 else f"s{i - 1}",)
    return StepSample(sid, n, tuple(tasks), inputs=upstream,
                      is_source=i == 0, source_rate_per_s=9000.0 if i == 0 else None,
                      backlog_rows=20_000 if i == 0 else None, key_group_owner=owner)


snap = MetricsSnapshot(100.0, 1.0, {s.step_id: s for s in (step(i, n, 8000.0)
                                                            for i, n in enumerate(counts))})
memory = rate.decide(MetricsSnapshot(90.0, 1.0, {
    k: StepSample(v.step_id, max(1, v.parallelism - 2), v.tasks[:max(1, v.parallelism - 2)],
                  v.inputs, v.is_source, v.source_rate_per_s, v.backlog_rows)
    for k, v in snap.steps.items()})).memory
policies = {
    "rate (curve)": lambda: rate.decide(snap, memory=memory),
    "rate (linear)": lambda: rate.decide(snap),
    "skew": lambda: skew.decide(snap),
    "ds2": lambda: baselines.ds2(snap),
    "flink": lambda: baselines.flink(snap, memory=baselines.FlinkMemory(-10_000.0)),
    "ray": lambda: baselines.ray_style(snap),
}
tasks = sum(counts)
for name, fn in policies.items():
    times = []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    print(json.dumps({"policy": name, "tasks": tasks, "key_groups": a.key_groups,
                      "median_ms": round(statistics.median(times), 3),
                      "max_ms": round(max(times), 3)}))
