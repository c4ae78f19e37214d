"""Shared fixtures: tiny configs that run the whole pipeline in seconds."""

from __future__ import annotations

import os

import pytest

# Tests never talk to wandb servers, whatever the user's environment says.
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")

# Overrides that shrink a run to a few seconds on a CPU (bundled sample, 4 sections, a few steps).
TINY = [
    "experiment=demo",
    "data.sections=0:4",
    "encoder.steps=3",
    "encoder.batch_size=16",
    "model.steps=3",
    "model.batch_size=4",
    "loop.initial=4",
    "loop.batch=4",
    "loop.rounds=1",
    "progress=false",
    "trainer.cpu_threads=1",
]


@pytest.fixture
def tiny_overrides(tmp_path):
    """TINY plus a private cache directory, so tests never share or pollute the user's cache."""
    return TINY + [f"paths.cache_dir={tmp_path / 'cache'}"]


def compose_config(overrides=(), name="config", hydra=False):
    """Compose a shipped config with overrides, as the CLI would (``name="suggest"`` for the lab loop's;
    ``hydra=True`` keeps the ``hydra`` node: launcher, sweeper). Composing only: nothing is validated or run."""
    from hydra import compose, initialize_config_dir

    from dualstream.cli import CONF_DIR, _register_resolvers

    _register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides), return_hydra_config=hydra)
