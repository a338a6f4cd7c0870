"""The soak: seeded random rounds of the windowed job (``windowed_job``) on real worker
processes, reconfigured and killed while it runs, its committed output checked against
DuckDB.

Round ``r`` draws everything from seed ``r`` (only timing varies), so a failing round
reruns by itself: ``python bench/soak.py --first r --rounds 1``. A round moves key groups,
swaps the function and the knob of step ``PREP`` (the output stays the same), SIGKILLs
workers (at random, during a reconfiguration, during a checkpoint) and, unless
``seed % 4 == 3``, rescales ``STEP`` (1..4 tasks). When ``seed % 3 == 2`` (and again when
``seed % 9 == 8``) the driver runs in a subprocess that is SIGKILLed; the job then resumes
from its checkpoints in a new driver, at another parallelism in rescaling rounds.

``python tests/faults/soak.py LEG`` is that subprocess: it drives one ``Leg`` (JSON) and
prints what happens as ``MARK`` lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import windowed_job as wj

import rheostat as rs
from rheostat.runtime.checkpoint import CheckpointStore

DEFAULT_ROUNDS = 6
RATE = 20_000  # rows/s: 4-6 s of input, time for a dozen changes
WORKERS = 2
KILLS_PER_LEG = 3
GUARD_S = 180  # liveness guards (a hung job or reconfiguration), never an assertion

# (kind, text); kinds: kill, driver, done, refused, error, note, restarts, running
Note = Callable[[str, str], None]
MARK = "soak-note "  # starts the driver subprocess's lines about its leg


def rounds(option: int | None = None) -> int:
    """How many rounds: ``option`` (``--rounds``), else RHEOSTAT_SOAK_ROUNDS, else 6."""
    if option is not None:
        return option
    return int(os.environ.get("RHEOSTAT_SOAK_ROUNDS", DEFAULT_ROUNDS))


@dataclass(frozen=True)
class Leg:
    """One driver's run of a round's job: the first starts it, later ones resume it."""

    seed: int
    index: int
    rows: int
    keys: int
    interval: str
    out: str
    chk: str
    rescale: bool
    parallelism: int
    resume: bool


@dataclass
class Round:
    """What one round did and how its output differs from the reference."""

    seed: int
    kills: int = 0
    driver_kills: int = 0
    done: int = 0
    refused: int = 0  # refused, failed (a kill hit it) or hung
    restarts: list[int] = field(default_factory=list)  # per driver
    errors: int = 0  # jobs that failed
    diff: wj.Diff | None = None
    seconds: float = 0.0
    history: list[str] = field(default_factory=list)

    def note(self, kind: str, text: str) -> None:
        if kind == "restarts":
            self.restarts[-1] = int(text)
            return
        if kind == "running":
            return
        self.history.append(text)
        self.kills += kind == "kill"
        self.driver_kills += kind == "driver"
        self.done += kind == "done"
        self.refused += kind == "refused"
        self.errors += kind == "error"

    @property
    def exact(self) -> bool:
        return self.diff is not None and self.diff.exact and not self.errors

    def cells(self) -> tuple[Any, ...]:
        d = self.diff or wj.Diff(0, 0, 0, 0)
        return (self.seed, d.expected, d.lost, d.duplicated, d.wrong, self.kills,
                self.driver_kills, self.done, self.refused, sum(self.restarts),
                f"{self.seconds:.1f}")

    def row(self) -> str:
        return row(*self.cells(), " ".join(self.history))


COLUMNS = ("seed", "windows", "lost", "dup", "wrong", "kills", "driver", "done", "refused",
           "restarts", "s")


def row(*cells: Any) -> str:
    """One line of the soak's table: ``COLUMNS``, then what happened."""
    return " ".join(f"{c:>{max(4, len(h))}}" for c, h in zip(cells, COLUMNS)) + \
        f"  {cells[-1]}"


HEADER = row(*COLUMNS, "what happened")


def table(rounds: list[Round]) -> str:
    """Header, one line per round, and a total line."""
    totals = [sum(int(r.cells()[i]) for r in rounds) for i in range(1, 10)]
    seconds = sum(r.seconds for r in rounds)
    bad = sum(not r.exact for r in rounds)
    return "\n".join([HEADER, *(r.row() for r in rounds),
                      row("all", *totals, f"{seconds:.0f}",
                          f"{len(rounds)} rounds, {bad} inexact")])


def run_round(seed: int, workdir: Path) -> Round:
    """Round ``seed`` in ``workdir``: its legs, then the comparison with DuckDB."""
    rnd = random.Random(seed)
    rows, keys = rnd.randint(80_000, 120_000), rnd.randint(200, 400)
    data = wj.events(rows, keys, seed)
    rescale = seed % 4 != 3
    driver_kills = (seed % 3 == 2) + (seed % 9 == 8)
    record = Round(seed)
    started = time.monotonic()
    parallelism = 2
    for index in range(driver_kills + 1):
        leg = Leg(seed, index, rows, keys, f"{rnd.randint(200, 400)}ms",
                  str(workdir / "out"), str(workdir / "chk"), rescale, parallelism,
                  resume=index > 0)
        record.restarts.append(0)
        if index > 0:
            latest = CheckpointStore(leg.chk).latest()
            record.history.append(
                f"resume@p{parallelism}:c{latest.checkpoint_id if latest else '-'}")
        if index < driver_kills:
            drive_and_kill(leg, rnd, record)
        else:
            drive(leg, record.note, data)
        if rescale:  # a resume may change the parallelism too
            parallelism = rnd.randint(1, 3)
    record.diff = wj.compare(wj.reference(data), wj.committed(workdir / "out"))
    record.seconds = time.monotonic() - started
    return record


def drive(leg: Leg, note: Note, data: list[dict[str, Any]] | None = None) -> None:
    """Run ``leg``'s job with its random schedule until it ends."""
    data = data or wj.events(leg.rows, leg.keys, leg.seed)
    flow = wj.flow(data, leg.out, rate=RATE, name=f"soak-{leg.seed}", updatable=True,
                   source_parallelism=2)
    job = rs.start(flow, parallelism=leg.parallelism, workers=WORKERS,
                   checkpoint_interval=leg.interval, checkpoint_dir=leg.chk,
                   restart=rs.RestartPolicy(attempts=10, backoff_s=0.05), resume=leg.resume)
    try:
        Schedule(job, random.Random(f"{leg.seed}/{leg.index}"), leg, note).run()
        result = job.wait(GUARD_S)
        note("restarts", str(result.restarts))
    except Exception as exc:  # the job failed (or hung): the round reports it
        note("error", f"JOB-FAILED({str(exc).splitlines()[0]})")
    finally:
        if job.running:
            job.cancel()
            with contextlib.suppress(Exception):
                job.wait(30)


def drive_and_kill(leg: Leg, rnd: random.Random, record: Round) -> None:
    """Run ``leg`` in a driver subprocess and SIGKILL it (and so its workers) at a
    random moment while its job runs."""
    proc = subprocess.Popen([sys.executable, __file__, json.dumps(asdict(leg))],
                            stdout=subprocess.PIPE, text=True)
    running = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                if not line.startswith(MARK):
                    continue
                kind, text = json.loads(line[len(MARK):])
                record.note(kind, text)
                if kind == "running":
                    running.set()
        finally:
            running.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    workers: list[psutil.Process] = []
    try:
        running.wait(GUARD_S)
        time.sleep(rnd.uniform(0.3, 2.5))
        if proc.poll() is not None:
            reader.join(10)
            record.note("error" if proc.returncode else "note",
                        f"(driver ended before its kill: exit code {proc.returncode})")
            return
        os.kill(proc.pid, signal.SIGSTOP)  # no new workers while we list them
        workers = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        record.note("driver", "DRIVER-KILL")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        # orphaned workers exit when their control pipe closes; make sure of it
        _, alive = psutil.wait_procs(workers, timeout=10)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        if alive:
            record.note("note", f"ORPHANS({len(alive)} workers outlived the driver)")
        reader.join(10)


class Schedule:
    """Random reconfigurations and worker kills, paced by sleeps, until the job ends."""

    def __init__(self, job: rs.Job, rnd: random.Random, leg: Leg, note: Note) -> None:
        self.job, self.rnd, self.leg, self.note = job, rnd, leg, note
        self.parallelism = leg.parallelism
        self.kills = 0

    def run(self) -> None:
        deadline = time.monotonic() + GUARD_S
        while self.job.running and time.monotonic() < deadline and not any(
                m.rows_in for m in list(self.job.controller.job.metrics.values())):
            time.sleep(0.02)
        self.note("running", "")
        actions = [self.move, self.update, self.knob, self.kill, self.kill_in_checkpoint]
        if self.leg.rescale:
            actions += [self.rescale, self.rescale, self.mixed, self.kill_in_rescale]
        else:
            actions += [self.kill_in_move]
        while self.job.running:
            time.sleep(self.rnd.uniform(0.1, 0.5))
            action = self.rnd.choice(actions)
            if action.__name__.startswith("kill") and self.kills >= KILLS_PER_LEG:
                action = self.move
            if action() == "ended":
                return
            self.note("restarts", str(self.restarts()))

    # --- actions: each returns "ended" once the job has ended ---------------------------

    def rescale(self) -> str:
        n = self.rnd.choice([p for p in range(1, 5) if p != self.parallelism])
        return self.request(f"p{n}", rs.Rescale(wj.STEP, n), parallelism=n)

    def move(self) -> str:
        groups, to = self.groups()
        return self.request(f"mv{len(groups)}>{to}", rs.MoveKeyGroups(wj.STEP, groups, to))

    def update(self) -> str:
        fn = self.rnd.choice([wj.clip, wj.clip_v2])
        return self.request(f"fn:{fn.__name__}", rs.UpdateFunction(wj.PREP, fn))

    def knob(self) -> str:
        value = self.rnd.randint(100, 1000)
        return self.request(f"knob{value}", rs.SetKnob(wj.PREP, "ceiling", value))

    def mixed(self) -> str:
        """A rescale, a move and a knob change as one reconfiguration."""
        n = self.rnd.choice([p for p in range(1, 5) if p != self.parallelism])
        groups, to = self.groups(min(n, self.parallelism))
        value = self.rnd.randint(100, 1000)
        return self.request(f"p{n}+mv{len(groups)}>{to}+knob{value}", rs.Rescale(wj.STEP, n),
                            rs.MoveKeyGroups(wj.STEP, groups, to),
                            rs.SetKnob(wj.PREP, "ceiling", value), parallelism=n)

    def kill(self) -> str:
        self.kill_worker("")
        return ""

    def kill_in_checkpoint(self) -> str:
        """Kill a worker while a checkpoint is in progress (if one shows within 1 s)."""
        for _ in range(200):
            if not self.job.running:
                return "ended"
            if self.job.sql("select count(*) from checkpoints where state = 'in progress'"
                            ).column(0)[0].as_py():
                self.kill_worker("@ckpt")
                return ""
            time.sleep(0.005)
        self.kill_worker("@ckpt?")
        return ""

    def kill_in_rescale(self) -> str:
        n = self.rnd.choice([p for p in range(1, 5) if p != self.parallelism])
        return self.kill_during(f"p{n}", rs.Rescale(wj.STEP, n), parallelism=n)

    def kill_in_move(self) -> str:
        groups, to = self.groups()
        return self.kill_during(f"mv{len(groups)}>{to}", rs.MoveKeyGroups(wj.STEP, groups, to))

    # --- helpers ---------------------------------------------------------------------

    def groups(self, tasks: int | None = None) -> tuple[tuple[int, ...], int]:
        start = self.rnd.randrange(0, 4096 - 512)
        to = self.rnd.randrange(tasks or self.parallelism)
        return tuple(range(start, start + self.rnd.randint(1, 512))), to

    def kill_during(self, what: str, op: Any, parallelism: int | None = None) -> str:
        pending = self.job.reconfigure(op, wait=False)
        time.sleep(self.rnd.uniform(0, 0.1))
        self.kill_worker(f"@{what}")
        return self.request(what, pending=pending, parallelism=parallelism)

    def request(self, what: str, *ops: Any, pending: Future[Any] | None = None,
                parallelism: int | None = None) -> str:
        try:
            answer = (pending or self.job.reconfigure(*ops, wait=False)).result(GUARD_S)
        except rs.ReconfigError as exc:
            if "ended" in str(exc):
                return "ended"
            self.note("refused", f"{what}:{'failed' if 'failed' in str(exc) else 'refused'}")
            return ""
        except TimeoutError:
            self.note("refused", f"{what}:HUNG")
            return ""
        status = answer.get("status") or answer.get("state")
        if status != "done":
            self.note("refused", f"{what}:{status}")
            return ""
        if parallelism is not None:
            self.parallelism = parallelism
        self.note("done", what)
        return ""

    def kill_worker(self, when: str) -> None:
        procs = [(w, p) for w, p in enumerate(self.job.controller.backend._procs)
                 if p.poll() is None]
        if not procs:
            return
        w, proc = self.rnd.choice(procs)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
            self.kills += 1
            self.note("kill", f"KILL-w{w}{when}")

    def restarts(self) -> int:
        return self.job.sql("select count(*) from restarts").column(0)[0].as_py()


if __name__ == "__main__":  # a driver subprocess of drive_and_kill
    drive(Leg(**json.loads(sys.argv[1])),
          lambda kind, text: print(MARK + json.dumps([kind, text]), flush=True))
