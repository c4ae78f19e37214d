"""``dualstream``: one run, or a sweep with ``-m`` / ``sweep=NAME``. Hydra composes; :mod:`.runner` runs.

Configs live in the repository's ``conf/`` (with ``experiments/`` and ``sweeps/`` reachable as the
``experiment`` and ``sweep`` groups). User mistakes end in one ``dualstream: error: ...`` line and exit 2.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

CONF_DIR = Path(os.environ.get("DUALSTREAM_CONF", Path(__file__).resolve().parents[1] / "conf"))
EXIT_USER_ERROR = 2
log = logging.getLogger("dualstream")


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    from dualstream.sample import sample_path

    if not OmegaConf.has_resolver("sample_path"):
        OmegaConf.register_new_resolver("sample_path", sample_path)


def _task(cfg) -> float:
    """The Hydra task: run, report the run's AULC (the Optuna sweeper's objective)."""
    from hydra.core.hydra_config import HydraConfig

    from dualstream.errors import DualstreamError
    from dualstream.runner import run

    run_dir = HydraConfig.get().runtime.output_dir
    try:
        results = run(cfg, run_dir)
    except DualstreamError as err:
        log.error("%s", err)
        print(f"dualstream: error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    log.info("results: %s", Path(run_dir) / "results.json")
    return float(results.extra.get("aulc", float("nan")))


def main() -> None:
    if not (CONF_DIR / "config.yaml").exists():
        print(
            f"dualstream: error: configs not found at {CONF_DIR}; install from a clone (`make install`)"
            " or set DUALSTREAM_CONF to the repository's conf/ directory",
            file=sys.stderr,
        )
        sys.exit(EXIT_USER_ERROR)
    import hydra

    _register_resolvers()
    hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(_task)()


if __name__ == "__main__":
    main()
