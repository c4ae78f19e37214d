"""Put a named acquisition config into an Optuna study file, so its next launch scores it first.

    python experiments/scripts/optuna_enqueue.py --storage sqlite:///optuna.db --acquisition dualstream
    python experiments/scripts/optuna_enqueue.py --storage sqlite:///optuna.db --acquisition dualstream \\
        --set mix_start=8 --set mix_end=64          # the default with two knobs changed (candidate D)

Why: a search's best trial means little without the default scored on the same tuning seeds. The
knobs of ``sweeps/optuna_dualstream.yaml``'s search space are read from ``conf/acquisition/<name>.yaml``
(``--set`` overrides one), checked against the space (a value outside a ``choice``'s options or an
``interval``'s bounds is one clear line, before the study is touched) and enqueued; the sweep's next
launch with the same ``hydra.sweeper.storage`` runs the enqueued trials before it samples new ones.
Knobs outside the search space are the sweep's own fixed values, not the config's: they are printed.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "acquisition.params."


def search_space(sweep: Path) -> dict[str, tuple[str, list, str | None]]:
    """``{knob: ("choice", options, switch) | ("interval", [low, high], switch)}`` from the sweep file.

    The sweeper's params (``switch`` None) and ``tune.only_if``'s knobs (``choice``; ``switch``: the
    knob that must be true for Optuna to sample them, see ``dualstream.tuning.conditional_space``).
    """
    conf = yaml.safe_load(sweep.read_text())
    params = conf["hydra"]["sweeper"]["params"]
    space: dict[str, tuple[str, list, str | None]] = {}
    for key, spec in params.items():
        m = re.fullmatch(r"\s*(choice|interval)\((.*)\)\s*", str(spec))
        if not key.startswith(PREFIX) or not m:
            raise SystemExit(f"optuna_enqueue: {sweep}: cannot read the search-space entry {key}: {spec!r}")
        values = [yaml.safe_load(v) for v in m.group(2).split(",")]
        space[key[len(PREFIX):]] = (m.group(1), values, None)
    for switch, knobs in ((conf.get("tune") or {}).get("only_if") or {}).items():
        for key, options in knobs.items():
            if not (key.startswith(PREFIX) and switch.startswith(PREFIX)):
                raise SystemExit(f"optuna_enqueue: {sweep}: cannot read tune.only_if entry {switch}: {key}")
            space[key[len(PREFIX):]] = ("choice", list(options), switch[len(PREFIX):])
    return space


def trial_params(acquisition: dict, space: dict[str, tuple[str, list, str | None]], sets: list[str]) -> dict[str, object]:
    """The enqueued trial: each search-space knob's value in the config (``--set k=v`` wins), checked.

    A ``tune.only_if`` knob is left out when its switch is off: Optuna does not sample it then.
    """
    if "params" not in acquisition and "acquisition" in acquisition:  # a global-package config (dualstream.yaml)
        acquisition = acquisition["acquisition"]
    values = dict(acquisition.get("params") or {})
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or key not in space:
            raise SystemExit(f"optuna_enqueue: --set {item!r}: expected KNOB=VALUE with KNOB one of {', '.join(space)}")
        values[key] = yaml.safe_load(raw)
    out = {}
    for knob, (kind, options, switch) in space.items():
        if switch is not None and values.get(switch) is not True:
            continue
        if knob not in values:
            raise SystemExit(f"optuna_enqueue: the config has no value for {knob}; give it with --set {knob}=VALUE")
        v = values[knob]
        if kind == "choice" and v not in options:
            raise SystemExit(f"optuna_enqueue: {knob}={v!r} is not among the search space's choices {options}; "
                             "the study could not score it as the same parameter")
        if kind == "interval" and not (isinstance(v, (int, float)) and options[0] <= v <= options[1]):
            raise SystemExit(f"optuna_enqueue: {knob}={v!r} is outside the search space's interval {options}")
        out[PREFIX + knob] = float(v) if kind == "interval" else v
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True, help="the study file, as hydra.sweeper.storage: sqlite:///<file>")
    parser.add_argument("--acquisition", default="dualstream", help="a config of conf/acquisition/ (default: dualstream)")
    parser.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE", help="override one knob (repeatable)")
    parser.add_argument("--sweep", default=str(ROOT / "sweeps" / "optuna_dualstream.yaml"))
    args = parser.parse_args(argv)
    sweep = yaml.safe_load(Path(args.sweep).read_text())
    conf = ROOT / "conf" / "acquisition" / f"{args.acquisition}.yaml"
    if not conf.exists():
        raise SystemExit(f"optuna_enqueue: no acquisition config {conf}")
    params = trial_params(yaml.safe_load(conf.read_text()), search_space(Path(args.sweep)), args.set)
    fixed = {k: v for k, v in (sweep.get("acquisition", {}).get("params") or {}).items() if PREFIX + k not in params}
    import optuna  # after the checks: they need no study

    study_name = sweep["hydra"]["sweeper"]["study_name"]
    study = optuna.create_study(study_name=study_name, storage=args.storage, load_if_exists=True,
                                direction=sweep["hydra"]["sweeper"]["direction"])
    with warnings.catch_warnings():  # enqueue_trial is marked experimental in Optuna 2.x; it is what the sweeper reads
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.enqueue_trial(params)
    waiting = sum(t.state.name == "WAITING" for t in study.trials)
    sys.stdout.write(f"enqueued in {study_name} ({args.storage}), {waiting} waiting: {params}\n"
                     f"fixed by the sweep, not by {conf.name}: {fixed}\n")


if __name__ == "__main__":
    main()
