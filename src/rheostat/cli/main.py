"""The ``rheostat`` command: run a flow file, watch and reconfigure it, draw it.

``rheostat run FILE`` imports FILE under a private module name (so its
``if __name__ == "__main__":`` block does not run), finds its ``rs.Flow`` and runs it with
live progress, then prints a summary. Errors in the flow or the job are reported in one
paragraph; ``--debug`` shows the Python traceback as well.

While it runs, the job serves its HTTP API and writes the URL and tokens to
``.rheostat/jobs/<flow>.tokens.json``; ``rheostat status``, ``rescale``, ``move``,
``update`` and ``knob`` find the job there.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sqlite3
import sys
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import click
import cloudpickle
from click.core import ParameterSource

from rheostat.api.flow import Flow
from rheostat.backends.base import BackendUnavailable
from rheostat.control.reconfig_json import op_to_json, parse_groups
from rheostat.control.tables import default_path as default_tables_path
from rheostat.control.tables import query_file
from rheostat.launch import run as run_flow
from rheostat.observe.progress import TerminalProgress, summary
from rheostat.plan.errors import FlowError
from rheostat.plan.reconfig import MoveKeyGroups, Place, Rescale, SetKnob
from rheostat.runtime.checkpoint import CheckpointError, CheckpointInfo, CheckpointStore
from rheostat.runtime.errors import JobFailed, UserFunctionError

EXIT_INTERRUPTED = 130
STATUS_TIMEOUT_S = 10.0
#: Longer than the API's own wait for a reconfiguration, so the API answers first.
RECONFIGURE_TIMEOUT_S = 330.0


class CliError(click.ClickException):
    """An error reported as one paragraph on stderr, exit status 1."""


# --- loading a flow file ---------------------------------------------------------------


def module_name_for(path: Path) -> str:
    """A private module name for a flow file: never ``__main__``.

    >>> module_name_for(Path("examples/hot-items.py"))
    '_rheostat_flow_hot_items'
    """
    return "_rheostat_flow_" + re.sub(r"\W", "_", path.stem)


def load_flow_module(path: Path) -> ModuleType:
    """Import ``path`` as a module named by :func:`module_name_for`.

    The file's folder goes first on ``sys.path`` (as for ``python FILE``, so its sibling
    modules import, in workers too), and the module's functions and classes are pickled by
    value, so worker processes need not import the file.
    """
    name = module_name_for(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CliError(f"cannot load {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[name] = module
    cloudpickle.register_pickle_by_value(module)
    spec.loader.exec_module(module)
    return module


def find_flow(module: ModuleType, wanted: str | None, where: str) -> Flow:
    """The module's flow: the only one, or the one whose variable or flow name is ``wanted``."""
    found: dict[str, Flow] = {}
    for var, value in vars(module).items():
        if isinstance(value, Flow) and not var.startswith("__"):
            found.setdefault(var, value)
    unique = list({id(f): f for f in found.values()}.values())
    listing = ", ".join(f"{var} (flow {f.name!r})" for var, f in found.items())
    if wanted is not None:
        matches = [f for var, f in found.items() if var == wanted]
        matches = matches or [f for f in unique if f.name == wanted]
        if len(matches) == 1:
            return matches[0]
        if not found:
            raise CliError(f"{where} defines no flow at module level, so there is no {wanted!r}")
        what = "several flows are named" if matches else "there is no flow named"
        raise CliError(f"{what} {wanted!r} in {where}; it defines: {listing}")
    if len(unique) == 1:
        return unique[0]
    if not unique:
        raise CliError(
            f"{where} defines no flow at module level; build one there with "
            "flow = rs.Flow('name') (flows made inside functions are not found)"
        )
    raise CliError(
        f"{where} defines {len(unique)} flows: {listing}; choose one with --flow NAME "
        "(a variable name or a flow name)"
    )


def _load(path: Path, wanted: str | None, debug: bool) -> Flow:
    try:
        module = load_flow_module(path)
    except (CliError, KeyboardInterrupt):
        raise
    except FlowError as exc:
        line = _line_in(exc, path)
        where = f" (line {line})" if line else ""
        _fail(f"the flow in {path} is not valid{where}: {exc}", exc, debug)
    except Exception as exc:  # the user's file raised: say where
        line = _line_in(exc, path)
        where = f" at line {line}" if line else ""
        _fail(f"loading {path} raised{where} {type(exc).__name__}: {exc}", exc, debug)
    return find_flow(module, wanted, str(path))


def _line_in(exc: BaseException, path: Path) -> int | None:
    """The line of ``path`` in the deepest frame of ``exc`` there, if any."""
    if isinstance(exc, SyntaxError) and exc.lineno:
        return exc.lineno
    target = str(path.resolve())
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename and str(Path(frame.filename).resolve()) == target:
            line = frame.lineno
    return line


# --- reporting errors ------------------------------------------------------------------


def describe_failure(exc: BaseException, hint: bool = True) -> str:
    """One paragraph for a failed job: what failed where, without tracebacks.

    >>> err = JobFailed("job 'j' failed in task a#0: boom\\n--- worker traceback ---\\n...")
    >>> describe_failure(err)
    "job 'j' failed in task a#0: boom"
    """
    cause = exc.__cause__
    if isinstance(exc, JobFailed) and isinstance(cause, UserFunctionError):
        head = str(exc).split(": step ", 1)[0]
        return (
            f"{head}: step {cause.step_id!r} failed on {cause.what}: {cause.cause_text}. "
            "Set on_error='skip' or 'dead_letter' on the step to keep going past bad rows"
            + ("; run with --debug to see the function's traceback" if hint else "")
        )
    kept: list[str] = []
    for line in str(exc).splitlines():
        text = line.strip()
        if text.startswith("Traceback (most recent") or (
            text.startswith("---") and "traceback" in text
        ):
            break
        if line.strip():
            kept.append(line.strip())
    return " ".join(kept) or type(exc).__name__


def _fail(message: str, exc: BaseException, debug: bool, hint: bool = True) -> NoReturn:
    if debug:
        traceback.print_exception(exc)
    elif hint:
        message += " (run with --debug for the traceback)"
    raise CliError(message)


def _interrupted(message: str) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(EXIT_INTERRUPTED)


# --- commands --------------------------------------------------------------------------


def _debug_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--debug", is_flag=True, help="Show Python tracebacks with errors."
    )(fn)


_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_FLOW = click.option(
    "--flow", "flow_name", metavar="NAME",
    help="Which flow to use when FILE defines several (variable name or flow name).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rheostat", prog_name="rheostat")
def cli() -> None:
    """rheostat: a vectorised stream-processing engine for Python."""


@cli.command("run")
@click.argument("file", type=_FILE)
@_FLOW
@click.option("-p", "--parallelism", type=click.IntRange(min=1), default=1, show_default=True,
              help="Tasks per step (steps may set their own).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Workers: processes for the local backend (default: one per core, "
              "at most the parallelism), actors on Ray (default: the parallelism).")
@click.option("--backend", type=click.Choice(["local", "inline", "ray"]), default="local",
              show_default=True, help="local: worker processes; inline: all in this "
              "process; ray: actors on a Ray cluster (pip install 'rheostat[ray]').")
@click.option("--address", "ray_address", metavar="ADDRESS", default=None,
              help="With --backend ray: the Ray cluster (auto, ray://head:10001; default: "
              "the one RAY_ADDRESS names, or a new Ray instance on this machine).")
@click.option("--no-progress", is_flag=True, help="Do not show live progress.")
@click.option("--checkpoint-interval", metavar="DURATION", default=None,
              help="Take aligned checkpoints this often (e.g. 1s); a crashed worker then "
              "restarts the job from the latest one.")
@click.option("--checkpoint-dir", metavar="URL", default=None,
              help="Where checkpoints go: a directory or fsspec URL "
              "(default .rheostat/checkpoints/<flow>).")
@click.option("--resume", is_flag=True,
              help="Continue from the latest complete checkpoint in --checkpoint-dir.")
@click.option("--from-savepoint", metavar="NAME", default=None,
              help="Start from the named savepoint in --checkpoint-dir.")
@click.option("--allow-dropped-state", is_flag=True,
              help="Resume even if the checkpoint holds state of steps the flow no longer has.")
@click.option("--http-port", type=click.IntRange(min=0, max=65535), default=0,
              show_default=True,
              help="Serve the job's HTTP API on 127.0.0.1:PORT (0: any free port); its URL "
              "and tokens are in .rheostat/jobs/<flow>.tokens.json while the job runs.")
@click.option("--autoscale", is_flag=True,
              help="Let the job rescale steps and move key groups by itself from its "
              "measured rates (rheostat decisions <flow> shows every decision).")
@click.option("--no-http", is_flag=True,
              help="Do not serve the HTTP API (rheostat status, rescale, ... cannot reach "
              "the job then).")
@_debug_option
def run_command(
    file: Path, flow_name: str | None, parallelism: int, workers: int | None,
    backend: str, ray_address: str | None, no_progress: bool,
    checkpoint_interval: str | None, checkpoint_dir: str | None, resume: bool,
    from_savepoint: str | None, allow_dropped_state: bool, http_port: int, autoscale: bool,
    no_http: bool, debug: bool,
) -> None:
    """Run the flow defined in FILE to completion (Ctrl-C stops it)."""
    if ray_address is not None and backend != "ray":
        raise click.UsageError("--address names a Ray cluster: use it with --backend ray")
    try:
        flow = _load(file, flow_name, debug)
    except KeyboardInterrupt:
        _interrupted(f"Interrupted (Ctrl-C) while loading {file}; nothing ran.")
    port_given = _given("http_port")
    if no_http and port_given:
        raise click.UsageError("--no-http and --http-port contradict each other; give one")
    progress = None if no_progress else TerminalProgress()
    tables_path = default_tables_path(flow.name)
    if not no_http and (port_given or sys.stderr.isatty()):
        click.echo(f"HTTP API: rheostat status {flow.name} (URL and tokens in "
                   f"{tokens_path(flow.name)} while the job runs)", err=True)
    try:
        result = run_flow(
            flow, parallelism=parallelism, backend=backend,  # type: ignore[arg-type]
            workers=workers, progress=progress if progress is not None else False,
            checkpoint_interval=checkpoint_interval, checkpoint_dir=checkpoint_dir,
            resume=from_savepoint or resume, allow_dropped_state=allow_dropped_state,
            tables=str(tables_path), http_port=None if no_http else http_port,
            ray_address=ray_address, autoscale=autoscale,
        )
    except KeyboardInterrupt:
        _close(progress)
        _interrupted(f"Interrupted (Ctrl-C): job {flow.name!r} was cancelled and its "
                     "workers stopped.")
    except FlowError as exc:
        _close(progress)
        _fail(f"the flow {flow.name!r} is not valid: {exc}", exc, debug)
    except JobFailed as exc:
        _close(progress)
        message = describe_failure(exc, hint=not debug)
        _fail(message, exc, debug, hint="--debug" not in message)
    except BackendUnavailable as exc:
        _close(progress)
        _fail(f"job {flow.name!r} could not start its workers: {exc}", exc, debug)
    except CheckpointError as exc:  # e.g. --resume of a checkpoint that does not verify
        _close(progress)
        _fail(f"job {flow.name!r}: {exc}", exc, debug, hint=False)
    except Exception as exc:  # report, do not dump a traceback
        _close(progress)
        _fail(f"job {flow.name!r} stopped on an unexpected {type(exc).__name__}: "
              f"{describe_failure(exc)}. This may be a bug in rheostat", exc, debug)
    _close(progress)
    click.echo(summary(result))


def _given(param: str) -> bool:
    """Whether the current command's ``param`` was given on the command line."""
    source = click.get_current_context().get_parameter_source(param)
    return source is ParameterSource.COMMANDLINE


def _close(progress: TerminalProgress | None) -> None:
    if progress is not None:
        progress.close()


@cli.command("mermaid")
@click.argument("file", type=_FILE)
@_FLOW
@_debug_option
def mermaid_command(file: Path, flow_name: str | None, debug: bool) -> None:
    """Print the flow in FILE as a Mermaid diagram."""
    click.echo(_load(file, flow_name, debug).to_mermaid())


@cli.command("jobs")
def jobs_command() -> None:
    """List the jobs run from this directory, with their state (from .rheostat/jobs/)."""
    files = sorted(default_tables_path("x").parent.glob("*.sqlite"))
    if not files:
        click.echo("no jobs have run from this directory")
    for path in files:
        try:
            (row,) = query_file(path, "select flow, state, restarts, started_at, ended_at "
                                      "from jobs").to_pylist()
        except Exception as exc:  # a file being created, or not ours
            click.echo(f"{path.stem}: unreadable ({exc})")
            continue
        click.echo(f"{row['flow']}: {row['state']}, {row['restarts']} restarts")


@cli.command("sql")
@click.argument("job")
@click.argument("query")
def sql_command(job: str, query: str) -> None:
    """Query JOB's tables (jobs, steps, tasks, key_groups, checkpoints, restarts, metrics),
    also while it runs: rheostat sql hot-items "select * from checkpoints"."""
    try:
        table = query_file(default_tables_path(job), query)
    except (FileNotFoundError, ValueError, sqlite3.Error) as exc:
        raise CliError(f"{exc}") from exc
    click.echo(table.to_pandas().to_string(index=False) if _has_pandas() else table)


@cli.command("decisions")
@click.argument("job")
@click.option("--all", "everything", is_flag=True,
              help="Also the evaluations that changed nothing.")
def decisions_command(job: str, everything: bool) -> None:
    """Print the closed loop's decisions for JOB (run with --autoscale), oldest first:
    when, which step, what it did and why."""
    where = "" if everything else "where action != 'none' or done = 'carried out'"
    try:
        rows = query_file(default_tables_path(job), f"""
            select evaluated_s, step_id, policy, action, parallelism, target_parallelism,
                   predicted_capacity, observed_capacity, done, reason
            from decisions {where} order by evaluated_s, policy desc, step_id""").to_pylist()
    except (FileNotFoundError, ValueError, sqlite3.Error) as exc:
        raise CliError(f"{exc}") from exc
    if not rows:
        click.echo(f"job {job!r} has no decisions" + ("" if everything else
                   " that changed anything (--all shows every evaluation)"))
    for r in rows:
        click.echo(format_decision(r))


def format_decision(r: dict[str, Any]) -> str:
    """One decision as a line and its reason.

    >>> print(format_decision({"evaluated_s": 12.5, "step_id": "work", "policy": "rate",
    ...     "action": "rescale", "parallelism": 2, "target_parallelism": 4,
    ...     "predicted_capacity": 4000.0, "observed_capacity": 3900.0,
    ...     "done": "carried out", "reason": "target 3400 rows/s needs 4 tasks"}))
    t=12.5s work (rate): rescale 2 -> 4, carried out; predicted 4000 rows/s, observed 3900
        target 3400 rows/s needs 4 tasks
    """
    what = (f"rescale {r['parallelism']} -> {r['target_parallelism']}"
            if r["action"] == "rescale" else r["action"])
    figures = ""
    if r["predicted_capacity"] is not None:
        figures = f"; predicted {r['predicted_capacity']:.0f} rows/s"
        if r["observed_capacity"] is not None:
            figures += f", observed {r['observed_capacity']:.0f}"
    return (f"t={r['evaluated_s']:.1f}s {r['step_id']} ({r['policy']}): {what}, "
            f"{r['done']}{figures}\n    {r['reason']}")


def _has_pandas() -> bool:
    return importlib.util.find_spec("pandas") is not None


@cli.command("checkpoints")
@click.argument("directory")
def checkpoints_command(directory: str) -> None:
    """List the checkpoints and savepoints in DIRECTORY (a --checkpoint-dir), each verified:
    its manifest's MAC under this deployment's checkpoint secret, then every part's hash."""
    store = CheckpointStore(directory)
    try:
        infos = store.list(verify=True)
        saved = store.savepoints(verify=True)
        key = store.key() if any(i.status != "incomplete" for i in infos + saved) else None
    except CheckpointError as exc:
        raise CliError(str(exc)) from None
    if not infos:
        click.echo(f"no checkpoints in {directory}")
    if key is not None:
        click.echo(f"verified with the checkpoint secret from {key.source} "
                   f"(key id {key.key_id})")
    for info in infos:
        click.echo(f"checkpoint {info.checkpoint_id}: {_verdict(info)}")
    for info in saved:
        click.echo(f"savepoint {info.savepoint}: {_verdict(info)}")


def _verdict(info: CheckpointInfo) -> str:
    """How one checkpoint fared: authenticated and intact, or why not."""
    if info.status == "complete":
        return "complete, verifies (manifest MAC and every part's hash)"
    if info.status == "unauthenticated":
        return f"NOT AUTHENTICATED, will not be restored: {info.reason}"
    return info.status + (f" ({info.reason})" if info.reason else "")


@cli.command("savepoint")
@click.argument("directory")
@click.argument("name")
def savepoint_command(directory: str, name: str) -> None:
    """Keep the latest complete checkpoint in DIRECTORY as savepoint NAME.

    Savepoints are never deleted by checkpoint retention; resume one with
    ``rheostat run FILE --checkpoint-dir DIRECTORY --from-savepoint NAME``.
    """
    store = CheckpointStore(directory)
    try:
        point = store.latest()
    except CheckpointError as exc:
        raise CliError(str(exc)) from None
    if point is None:
        raise CliError(f"no complete checkpoint in {directory} to keep as a savepoint")
    store.promote_to_savepoint(point.checkpoint_id, name)
    click.echo(f"savepoint {name!r} holds checkpoint {point.checkpoint_id}")


# --- talking to a running job ------------------------------------------------------------


def tokens_path(job: str) -> Path:
    """Where a running job's API writes its URL and tokens (next to its tables file)."""
    return default_tables_path(job).parent / f"{job}.tokens.json"


def _endpoint(job: str) -> dict[str, str]:
    """The running job's ``url``, ``admin`` and ``read`` token, from its tokens file."""
    path = tokens_path(job)
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise CliError(f"job {job} is not running (no {path}); "
                       "start it with rheostat run") from None
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    if not isinstance(info, dict) or not all(
        isinstance(info.get(k), str) for k in ("url", "admin", "read")
    ):
        raise CliError(f"{path} is not a rheostat tokens file (it needs url, admin, read)")
    return info


def _call(job: str, path: str, token: str, body: Any = None, timeout: float = 10.0) -> Any:
    """The JSON answer of the job's API to GET ``path`` (POST when ``body`` is given)."""
    info = _endpoint(job)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(info["url"] + path, data=data,
                                     method="GET" if body is None else "POST")
    request.add_header("Authorization", f"Bearer {info[token]}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raise CliError(f"job {job}: {_api_error(exc)} (HTTP {exc.code})") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(f"cannot reach job {job} at {info['url']} ({reason}); if it has "
                       f"stopped, {tokens_path(job)} is left over and can be deleted") from None
    try:
        return json.loads(raw)
    except ValueError:
        raise CliError(f"job {job}: the answer to {path} is not JSON: {raw[:200]!r}") from None


def _api_error(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read())["error"])
    except Exception:  # not our JSON: say what HTTP said
        return str(exc.reason)


def _reconfigure(job: str, op: dict[str, Any]) -> None:
    """POST one operation to the job and print how it went (exit 1 unless done)."""
    reply = _call(job, "/v1/reconfigure", "admin", {"ops": [op]}, RECONFIGURE_TIMEOUT_S)
    if not isinstance(reply, dict):
        raise CliError(f"job {job}: unexpected answer {reply!r}")
    status, reason = reply.get("status"), reply.get("reason")
    ms = reply.get("duration_ms")
    took = f" in {ms:.0f} ms" if isinstance(ms, int | float) else ""
    line = f"reconfiguration {reply.get('reconfig_id', '?')} {status}{took}"
    if status != "done":
        raise CliError(line + (f": {reason}" if reason else ""))
    click.echo(line)


def format_status(job: dict[str, Any]) -> str:
    """A readable summary of ``GET /v1/job``: the job, then one row per task.

    >>> print(format_status({"flow": "j", "state": "running", "restarts": 0,
    ...     "checkpoints_completed": [1, 2], "tasks": {"s#0": {"rows_in": 5,
    ...     "rows_out": 5, "watermark": None}}}))
    job j: running, 0 restarts, 2 checkpoints (latest 2)
    task  rows in  rows out  watermark
    s#0         5         5          -
    """
    done = job.get("checkpoints_completed") or []
    latest = f" (latest {done[-1]})" if done else ""
    head = (f"job {job.get('flow')}: {job.get('state')}, {job.get('restarts', 0)} restarts, "
            f"{len(done)} checkpoints{latest}")
    rows = [("task", "rows in", "rows out", "watermark")]
    for task, m in (job.get("tasks") or {}).items():
        mark = m.get("watermark")
        rows.append((task, str(m.get("rows_in", 0)), str(m.get("rows_out", 0)),
                     "-" if mark is None else str(mark)))
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [head] + ["  ".join([r[0].ljust(width[0])] + [c.rjust(w) for c, w in
                                                         zip(r[1:], width[1:])]).rstrip()
                      for r in rows]
    return "\n".join(lines)


@cli.command("status")
@click.argument("job")
def status_command(job: str) -> None:
    """Show running JOB's state, checkpoints and per-task rows and watermarks."""
    click.echo(format_status(_call(job, "/v1/job", "read", timeout=STATUS_TIMEOUT_S)))


@cli.command("rescale")
@click.argument("job")
@click.argument("step")
@click.argument("parallelism", type=click.IntRange(min=1))
def rescale_command(job: str, step: str, parallelism: int) -> None:
    """Run STEP of running JOB (and the steps chained with it) on PARALLELISM tasks."""
    _reconfigure(job, op_to_json(Rescale(step, parallelism)))


@cli.command("move")
@click.argument("job")
@click.argument("step")
@click.argument("groups")
@click.option("--to", "to_task", type=click.IntRange(min=0), required=True, metavar="TASK",
              help="The index of the task of STEP that takes the key groups.")
def move_command(job: str, step: str, groups: str, to_task: int) -> None:
    """Give key GROUPS (e.g. 0-1023,2048) of keyed STEP of running JOB to task --to."""
    try:
        parsed = parse_groups(groups)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="GROUPS") from None
    _reconfigure(job, op_to_json(MoveKeyGroups(step, parsed, to_task)))


@cli.command("place")
@click.argument("job")
@click.argument("task")
@click.argument("worker", type=click.IntRange(min=0), required=False)
@click.option("--node", metavar="NODE", default=None,
              help="On Ray: a new worker on this node (node id or IP address) instead.")
def place_command(job: str, task: str, worker: int | None, node: str | None) -> None:
    """Move TASK (e.g. counts#1) of running JOB to WORKER, with its key groups' state.

    ``rheostat sql JOB "select task_id, worker from tasks"`` shows where tasks run.
    """
    if (worker is None) == (node is None):
        raise click.UsageError("give a WORKER or --node NODE (one of them)")
    _reconfigure(job, op_to_json(Place(task, -1 if worker is None else worker, node)))


@cli.command("update")
@click.argument("job")
@click.argument("step")
@click.argument("function", metavar="MODULE:FUNCTION")
def update_command(job: str, step: str, function: str) -> None:
    """Run MODULE:FUNCTION as STEP's function in running JOB from now on.

    The job imports MODULE itself: it must be importable there (e.g. a module next to
    the flow file).
    """
    if ":" not in function:
        raise click.BadParameter("give it as module.path:function_name",
                                 param_hint="MODULE:FUNCTION")
    _reconfigure(job, {"op": "update", "step": step, "function": function})


@cli.command("knob")
@click.argument("job")
@click.argument("step")
@click.argument("name")
@click.argument("value")
def knob_command(job: str, step: str, name: str, value: str) -> None:
    """Set knob NAME of STEP in running JOB to VALUE (JSON if it parses, else a string)."""
    _reconfigure(job, op_to_json(SetKnob(step, name, parse_value(value))))


def parse_value(text: str) -> Any:
    """``text`` as JSON if it parses, else the string itself.

    >>> parse_value("0.7"), parse_value("true"), parse_value("fast"), parse_value('"7"')
    (0.7, True, 'fast', '7')
    """
    try:
        return json.loads(text)
    except ValueError:
        return text


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
