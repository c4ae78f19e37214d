"""``dualstream``: one run, or a sweep with ``-m`` / ``sweep=NAME``. Hydra composes; :mod:`.runner` runs.

Configs live in the repository's ``conf/`` (with ``experiments/`` and ``sweeps/`` reachable as the
``experiment`` and ``sweep`` groups). User mistakes end in one ``dualstream: error: ...`` line and exit 2,
before any training: Hydra's own override errors, then :func:`dualstream.validate.validate` on the
composed config, then the data checks made while the volumes are opened.

In a sweep, a job with a bad config fails alone: its error is logged in its folder (``error.txt``),
the other jobs run, and at the end every failed job is printed (job number, overrides, error) and the
command exits 2. Set ``HYDRA_FULL_ERROR=1`` for Hydra's full tracebacks instead.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

from dualstream.errors import DualstreamError

CONF_DIR = Path(os.environ.get("DUALSTREAM_CONF", Path(__file__).resolve().parents[1] / "conf"))
EXIT_USER_ERROR = 2
#: Written into a sweep job's folder when the job fails on a user error; read back to list failures.
ERROR_FILE = "error.txt"
log = logging.getLogger("dualstream")


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    from dualstream.sample import sample_path

    if not OmegaConf.has_resolver("sample_path"):
        OmegaConf.register_new_resolver("sample_path", sample_path)


def _task(cfg) -> float:
    """The Hydra task: check, run, report the run's ``tune.objective`` (the Optuna sweeper's objective).

    With ``tune.seeds`` the job is one tuning trial: a run per seed, their mean (:mod:`dualstream.tuning`).

    A user error ends a single run (one line, exit 2). In a sweep it is raised instead, so that Hydra
    records the job as failed and the launcher goes on with the others; :func:`main` lists them.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dualstream.watchdog import start_watchdog

    start_watchdog()  # in a sweep job: stop when the `dualstream -m` process is gone
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    sweeping = hc.mode == RunMode.MULTIRUN
    (run_dir / ERROR_FILE).unlink(missing_ok=True)  # a re-run into the same folder starts clean
    try:
        from dualstream.trainer import set_progress
        from dualstream.validate import load_plugins, validate

        load_plugins(cfg)
        validate(cfg, run_dir)
        set_progress(bool(cfg.get("progress", True)))
        from dualstream.runner import run
        from dualstream.state import already_finished
        from dualstream.tuning import DEFAULT_OBJECTIVE, objective_of, run_seeds

        tune = cfg.get("tune") or {}
        objective = str(tune.get("objective", DEFAULT_OBJECTIVE))

        def run_one(job_cfg, job_dir: Path) -> None:
            if already_finished(job_cfg, job_dir) is None:  # a relaunched sweep skips its finished runs
                run(job_cfg, job_dir)
                log.info("results: %s", job_dir / "results.json")

        if tune.get("seeds"):  # one tuning trial over several seeds: their mean
            return run_seeds(cfg, run_dir, list(hc.overrides.task), run_one)
        run_one(cfg, run_dir)
    except DualstreamError as err:
        log.error("%s", err)
        if not sweeping:  # exit here: a raised error would make Hydra add its own lines
            _fail(str(err))
        job = f"job {hc.job.num} ({' '.join(hc.overrides.task) or 'no overrides'})"
        (run_dir / ERROR_FILE).write_text(f"{job}: {err}\n")
        raise SweepJobError(f"{job}: {err}", str(Path(hc.sweep.dir))) from None
    return objective_of(run_dir, objective)


class SweepJobError(DualstreamError):
    """A sweep job's user error; ``args = (message, sweep_dir)`` (pickled back from the launcher's workers)."""

    def __str__(self) -> str:
        return str(self.args[0])


PROG = "dualstream"  # the console script whose errors are printed (launch() sets it)


def _fail(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def _hydra_message(err: Exception) -> str:
    """One line for Hydra's own override and composition errors, naming the key or option."""
    text = str(err)
    cause = str(err.__cause__ or "")
    m = re.search(r"Could not (?:override|append to config) '([^']+)'", text)
    if m and ("not in struct" in cause or "not in struct" in text):
        from dualstream.validate import options_with_key, suggest_key

        key = m.group(1)
        presets = options_with_key(key, str(CONF_DIR))
        if presets:  # a real key of another preset: the group option composed at launch lacks it
            group = key.split(".", 1)[0]
            return (
                f"{key}: not a key of the {group} preset composed at launch, only of {', '.join(presets)}; put"
                f" {group}={presets[0]} (or another of those) on the command line: a sweep preset's own {group}"
                " list is applied per job, after the command line is checked"
            )
        return f"{key}: not a config key{suggest_key(key, str(CONF_DIR))}; fix the name (a new key on purpose: +{key}=...)"
    m = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if m:
        group, option = m.groups()
        options = re.findall(r"^\t(\S+)$", text, flags=re.M)
        choose = f"; choose one of {', '.join(options)}" if options else ""
        return f"{group}={option}: no such {group} preset{choose}"
    override = getattr(err, "override", None)
    if override is not None or "Error parsing override" in text:
        lines = [line.strip() for line in text.splitlines() if line.strip() and "See https" not in line]
        detail = " ".join(line for line in lines if not line.startswith("Error parsing override")).split("; See https")[0]
        if override is None:
            override = lines[0].replace("Error parsing override ", "").strip("'")
        return f"{override}: cannot parse this override ({detail}); write key=value (quote lists and braces: 'key=[1,2]')"
    lines = [line.strip() for line in (text + "\n" + cause).splitlines() if line.strip() and not line.startswith("Config search path")]
    return "; ".join(dict.fromkeys(lines))[:500]


def _report_sweep_failures(err: Exception) -> None:
    """Print every failed job of the sweep (from their ``error.txt``), then exit 2."""
    sweep_dir = Path(err.args[1]) if len(err.args) > 1 else None
    found = sorted(sweep_dir.glob(f"*/{ERROR_FILE}"), key=lambda p: p.stat().st_mtime) if sweep_dir and sweep_dir.is_dir() else []
    lines = [p.read_text().strip() for p in found] or [str(err)]
    for line in lines:
        print(f"dualstream: error: {line}", file=sys.stderr)
    print(
        f"dualstream: error: {len(lines)} job(s) of the sweep failed (listed above); the others ran to the end in {sweep_dir}",
        file=sys.stderr,
    )
    sys.exit(EXIT_USER_ERROR)


def _null_group_override(args: list[str]) -> str | None:
    """The first config group (a folder of ``conf/``) that ``args`` set to ``null``, e.g. ``screen_encoder=null``."""
    for arg in args:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+")
        if sep and value.strip() == "null" and (CONF_DIR / key).is_dir() and not (CONF_DIR / key / "null.yaml").exists():
            return key
    return None


def main() -> None:
    launch(_task, "config", "dualstream")


def launch(task: Callable[[Any], Any], config_name: str, prog: str) -> None:
    """Run ``task`` as a Hydra app on ``conf/<config_name>.yaml``; user errors end in one line and exit 2."""
    global PROG
    PROG = prog
    if not (CONF_DIR / "config.yaml").exists():
        _fail(
            f"configs not found at {CONF_DIR}; install from a clone (`make install`)"
            " or set DUALSTREAM_CONF to the repository's conf/ directory"
        )
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    _register_resolvers()
    from dualstream.watchdog import mark_launcher

    mark_launcher()  # sweep jobs watch this process and stop when it is gone
    app = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(task)
    if os.environ.get("HYDRA_FULL_ERROR") == "1":  # the user asked for Hydra's full tracebacks
        app()
        return
    # Hydra prints its errors itself (as tracebacks) unless HYDRA_FULL_ERROR is set: then it raises,
    # and user errors are printed here as one line.
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C / SIGINT: joblib has stopped the sweep's workers already
        print(
            f"{PROG}: interrupted; rerun the same command with the same hydra.run.dir (hydra.sweep.dir with -m)"
            " to resume after the last finished round",
            file=sys.stderr,
        )
        sys.exit(130)
    except SweepJobError as err:
        _report_sweep_failures(err)
    except DualstreamError as err:
        _fail(str(err))
    except (HydraException, OmegaConfBaseException) as err:
        _fail(_hydra_message(err))
    except ValueError as err:
        group = _null_group_override(sys.argv[1:])
        if group is None or "Config group override" not in str(err):
            raise
        _fail(
            f"{group}=null: a config group cannot be set to null on the command line;"
            f" drop it with '~{group}' (quoted, so the shell leaves the ~ alone)"
        )
    except OSError as err:
        if err.filename is None:
            raise
        # Raised outside the task (which turns its own problems into DualstreamErrors): Hydra creating
        # the run or sweep folder.
        _fail(
            f"{err.filename}: cannot create or write ({err.strerror}); set a writable hydra.run.dir"
            " (hydra.sweep.dir with -m) or paths.output_dir"
        )
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


if __name__ == "__main__":
    main()
