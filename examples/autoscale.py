"""The closed loop following a rate surge and a drop by itself.

The flow: a paced source, the costly ``work`` step behind a ``rebalance()`` (so it can
be rescaled apart from the source), then a count per key (``key_by``) and a sink. (The
cost sits before ``key_by``: rescaling a stateless step behind a keyed edge fails today.)

A paced source reads 400 rows/s, 800 from 12 s (x2), 400 again from 24 s (x0.5), to 36 s.
Each row costs 5 ms in the ``work`` step, served as a sleep (``rs.testing.costly``): it
emulates capacity, not CPU, so a 2-core machine can show 5 tasks serving 5 times one
task's 200 rows/s. At the loop's default 85 % target utilisation the right sizes are
ceil(400 * 0.005 / 0.85) = 3 tasks, then 5, then 3 again. Run it with a worker process
per task (tasks in one worker process take turns, and sleeping ones would too)::

    rheostat run examples/autoscale.py --autoscale --workers 6
    rheostat decisions autoscale

The loop evaluates every 2 s; a scale-up is carried out at once, a scale-down once it
has been wanted for 10 s (``rs.Autoscale``'s defaults).
"""

import rheostat as rs

PER_ROW_S = 0.005  # 200 rows/s per task
SCHEDULE = [(0, 400), (12, 800), (24, 400)]
END_S = 36
ROWS = [{"k": i % 64, "x": i} for i in range(400 * 12 + 800 * 12 + 400 * (END_S - 24))]

flow = rs.Flow("autoscale")
(flow.source("src", rs.testing.rows(ROWS, batch_size=20), rate=SCHEDULE, parallelism=1)
     .rebalance()
     .map_batches(rs.testing.costly(PER_ROW_S), name="work")
     .key_by("k")
     .process(rs.stateful_map(lambda n, row: ((n or 0) + 1, row)), name="count")
     .sink("out", rs.sinks.collect()))


if __name__ == "__main__":
    result = rs.run(flow, workers=6, autoscale=True, progress=True)
    print(result.sql("select evaluated_s, step_id, action, done from decisions "
                     "where step_id = 'work' and done = 'carried out'"))
