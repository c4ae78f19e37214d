"""dualstream.provenance: the host and library facts every results.json records."""

from __future__ import annotations

import json

import torch

from dualstream.provenance import cpu_model, environment, source_commit


def test_cpu_model_reads_the_model_name(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t: sse\n")
    assert cpu_model(info) == "AMD EPYC 7B13"
    assert cpu_model(tmp_path / "missing")  # elsewhere: platform's answer, never empty on a real machine


def test_environment_is_json_ready_and_names_the_libraries():
    env = environment()
    assert json.loads(json.dumps(env)) == env
    assert env["torch"] == torch.__version__
    assert (env["gpu"] is None) == (not torch.cuda.is_available())
    assert set(env) >= {"dualstream", "commit", "python", "torch", "pytorch_lightning", "numpy", "cpu", "machine"}


def test_source_commit_outside_a_checkout_is_none(tmp_path):
    assert source_commit(tmp_path) is None
    commit = source_commit()  # this test runs from a clone: 40 hex digits, maybe +dirty
    assert commit is None or len(commit.split("+")[0]) == 40
