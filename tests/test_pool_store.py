"""A pool on disk (data.pool_store=disk): the uint8 store, lazy indexing, extraction into it, the
refusals, and a whole run on the bundled sample that queries exactly what the in-memory run on the
same (quantised) pool queries."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from dualstream.datamodules import LazyPatches, patch_dataset
from dualstream.errors import ConfigError
from dualstream.patches import extract_patches
from dualstream.pool_store import PatchStore, PatchStoreWriter, pool_store_mode, quantise, quantised
from dualstream.state import config_hash, pool_fingerprint
from dualstream.volume import Volume

from conftest import compose_config


def _write(path, images, labels=None, chunk=4):
    writer = PatchStoreWriter(path, images.shape[1:], chunk_items=chunk)
    labels = (images > 0.5).astype(np.uint8) if labels is None else labels
    half = len(images) // 2  # two appends: the store is the concatenation
    for part in (slice(0, half), slice(half, None)):
        n = len(images[part])
        writer.append(images[part], labels[part], np.linspace(0, 1, n, dtype=np.float32), np.zeros((n, 3), dtype=np.int64))
    return writer.close((1.0, 2.0, 2.0), "synthetic")


def test_quantise_rounds_to_255_levels():
    x = np.array([0.0, 0.5 / 255, 1.49 / 255, 1.51 / 255, 1.0, -0.1, 1.2], dtype=np.float32)
    assert quantise(x).tolist() == [0, 0, 1, 2, 255, 0, 255]
    assert quantised(x).dtype == np.float32 and np.allclose(quantised(x), quantise(x) / 255.0)


def test_store_round_trip_and_indexing(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((23, 6, 5), dtype=np.float32)
    store = _write(tmp_path / "pool.h5", images)
    expected = quantised(images)
    assert (len(store), store.shape, store.ndim, store.dtype) == (23, (23, 6, 5), 3, np.float32)
    np.testing.assert_array_equal(store[0:23], expected)
    np.testing.assert_array_equal(store[7], expected[7])
    np.testing.assert_array_equal(store[-1], expected[-1])
    np.testing.assert_array_equal(store[3:17:4], expected[3:17:4])
    for idx in ([22, 0, 5, 5, 11], np.array([4, 2]), np.arange(23)[::-3], [0, 22]):  # unsorted, repeats, scattered
        np.testing.assert_array_equal(store[idx], expected[np.asarray(idx)])
    mask = rng.random(23) < 0.4
    np.testing.assert_array_equal(store[mask], expected[mask])
    np.testing.assert_array_equal(store[np.array([3, 9]), 1:4], expected[[3, 9], 1:4])
    assert store[np.zeros(0, dtype=np.int64)].shape == (0, 6, 5)
    with pytest.raises(IndexError):
        store[23]
    with pytest.raises(IndexError):
        store[[0, 23]]
    batches = list(store.iter_batches(10))
    assert [s for s, _ in batches] == [0, 10, 20]
    np.testing.assert_array_equal(np.concatenate([b for _, b in batches]), expected)
    np.testing.assert_array_equal(store.labels[[5, 1]], (images[[5, 1]] > 0.5).astype(np.uint8))
    assert store.labels.dtype == np.uint8 and store.labels.any()
    np.testing.assert_array_equal(store.read_small("ignore_share"), np.concatenate([np.linspace(0, 1, 11), np.linspace(0, 1, 12)]).astype(np.float32))
    with pytest.raises(TypeError, match="read in batches"):
        np.asarray(store)  # a whole-pool read must fail loudly, never happen silently
    again = pickle.loads(pickle.dumps(store))  # DataLoader workers / DDP ranks get their own handle
    np.testing.assert_array_equal(again[[1, 2]], expected[[1, 2]])


def test_digest_is_the_content_not_the_file(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.random((10, 4, 4), dtype=np.float32)
    a, b = _write(tmp_path / "a.h5", images), _write(tmp_path / "b.h5", images, chunk=3)
    changed = images.copy()
    changed[9, 3, 3] = 1.0 - changed[9, 3, 3]
    c = _write(tmp_path / "c.h5", changed)
    assert a.digest == b.digest != c.digest
    assert pool_fingerprint(a) == pool_fingerprint(b) != pool_fingerprint(c)


def test_extraction_into_a_store_equals_the_quantised_memory_pool(tmp_path):
    rng = np.random.default_rng(2)
    image = Volume(data=rng.integers(0, 256, (6, 40, 36), dtype=np.uint8), voxel_size=(40.0, 4.0, 4.0), source="img")
    labels = Volume(data=(rng.random((6, 40, 36)) > 0.7).astype(np.uint8), voxel_size=(40.0, 4.0, 4.0), source="lab")
    for extra in ({}, {"depth": 2, "stride_z": 1}):  # 2D tiles and 3D blocks
        mem = extract_patches(image, labels, [0, 1, 2, 3, 4], 8, stride=6, factor=2, **extra)
        disk = extract_patches(image, labels, [0, 1, 2, 3, 4], 8, stride=6, factor=2, store=tmp_path / f"p{len(extra)}.h5", **extra)
        assert isinstance(disk.images, PatchStore) and disk.images.shape == mem.images.shape
        np.testing.assert_array_equal(disk.images[0 : len(mem)], quantised(mem.images))
        np.testing.assert_array_equal(disk.labels[0 : len(mem)], mem.labels)
        np.testing.assert_array_equal(disk.origins, mem.origins)
        np.testing.assert_array_equal(disk.ignore_share, mem.ignore_share)
        assert disk.voxel_size == mem.voxel_size and disk.depth == mem.depth


def test_lazy_dataset_gives_the_tensor_dataset_s_batches(tmp_path):
    rng = np.random.default_rng(3)
    images = quantised(rng.random((12, 5, 5), dtype=np.float32))
    store = _write(tmp_path / "pool.h5", images)
    lazy, eager = patch_dataset(store, store.labels), patch_dataset(images, (images > 0.5).astype(np.uint8))
    assert isinstance(lazy, LazyPatches) and not isinstance(eager, LazyPatches)
    for a, b in zip(lazy.__getitems__([3, 0, 3]), [eager[i] for i in (3, 0, 3)]):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert all(torch.equal(x, y) for x, y in zip(lazy[7], eager[7]))


def test_pool_store_key_and_its_refusals():
    assert pool_store_mode({}) == "memory" and pool_store_mode({"pool_store": "disk"}) == "disk"
    with pytest.raises(ConfigError, match=r"data.pool_store='ram'.*expected memory .* or disk"):
        pool_store_mode({"pool_store": "ram"})
    with pytest.raises(ConfigError, match=r"data.pool_store=disk cannot be combined with data.inject_artifacts=0.1.*set data.inject_artifacts=0"):
        pool_store_mode({"pool_store": "disk", "inject_artifacts": 0.1})


def test_the_default_key_leaves_run_hashes_unchanged():
    old = {"seed": 0, "data": {"patch_size": 64}}
    assert config_hash({"seed": 0, "data": {"patch_size": 64, "pool_store": "memory"}}) == config_hash(old)
    assert config_hash({"seed": 0, "data": {"patch_size": 64, "pool_store": "disk"}}) != config_hash(old)


# -- whole runs on the bundled sample ---------------------------------------------------------------

# data.downsample=2: block means are not multiples of 1/255, so the quantisation is not the identity
# (at full resolution the sample's uint8 pixels / 255 survive it exactly).
RUN = [
    "experiment=demo", "data.sections=0:4", "data.downsample=2", "encoder.steps=3", "encoder.batch_size=16", "model.steps=3",
    "model.batch_size=4", "model.module.width=4", "loop.initial=4", "loop.batch=4", "loop.rounds=2",
    "acquisition=dualstream", "logger=none", "progress=false", "trainer.cpu_threads=1",
]


def _run(tmp_path, name, extra, make_hook=None):
    from dualstream.runner import run
    from dualstream.state import LoopState

    cfg = compose_config([*RUN, f"paths.cache_dir={tmp_path / name / 'cache'}", *extra])
    results = run(cfg, tmp_path / name / "run", make_hook=make_hook)
    return results, LoopState.load(tmp_path / name / "run")


@pytest.mark.slow
def test_a_disk_run_queries_what_the_memory_run_on_the_quantised_pool_queries(tmp_path, monkeypatch):
    import dualstream.tasks.segment as segment

    seen = {}

    def hook(setup):
        def on_propose(loop, number, selection, view):
            # Only the answered items' masks are kept, never an (N, P, P) array of them.
            assert not hasattr(loop, "masks") and len(loop.answers) == int(loop.labeled.sum())
            seen[number] = isinstance(loop.images, PatchStore)
        return on_propose

    disk, disk_state = _run(tmp_path, "disk", ["data.pool_store=disk"], make_hook=hook)
    assert seen and all(seen.values()) and len(seen) == 3
    assert len(list((tmp_path / "disk" / "cache" / "pools").glob("*/pool.h5"))) == 1
    # A second disk run with the same data reopens the store (same digest, same encoder cache key).
    again, _ = _run(tmp_path, "disk", ["data.pool_store=disk", "resume=false"])
    assert again.extra["encoder_key"] == disk.extra["encoder_key"] and again.extra["encoder_cached"]

    real = segment.build_pools

    def quantised_pools(data, store_dir=None):  # the in-memory pool, quantised as the disk pool is
        pool, test = real(data, store_dir)
        assert store_dir is None and isinstance(pool.images, np.ndarray)
        pool.images, test.images = quantised(pool.images), quantised(test.images)
        return pool, test

    monkeypatch.setattr(segment, "build_pools", quantised_pools)
    mem, mem_state = _run(tmp_path, "memory", [])
    assert len(disk_state.proposed) == len(mem_state.proposed) == 3
    for a, b in zip(disk_state.proposed, mem_state.proposed):
        np.testing.assert_array_equal(a, b)
    assert [r.score for r in disk.records] == [r.score for r in mem.records]
    assert disk.extra["pool_size"] == mem.extra["pool_size"]


@pytest.mark.parametrize(
    "extra, match",
    [
        (["data.inject_artifacts=0.1"], "data.pool_store=disk cannot be combined with data.inject_artifacts=0.1"),
        (["loop.initial=all"], "data.pool_store=disk cannot be combined with loop.initial=all"),
    ],
)
def test_what_needs_the_whole_pool_in_memory_is_refused_before_any_work(tmp_path, extra, match):
    from dualstream.runner import run

    cfg = compose_config([*RUN, f"paths.cache_dir={tmp_path / 'cache'}", "data.pool_store=disk", *extra])
    with pytest.raises(ConfigError, match=match) as err:
        run(cfg, tmp_path / "run")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "cache" / "pools").exists() and not (tmp_path / "run" / "pool_store").exists()


def test_validate_checks_the_key_and_detect_refuses_a_disk_pool():
    """Before any work: a wrong value fails in validate; the detect task says it keeps crops in memory."""
    from omegaconf import OmegaConf

    from dualstream.tasks import detect
    from dualstream.validate import check_data

    cfg = OmegaConf.create({"data": {"image": "x", "patch_size": 64, "label_threshold": 0, "pool_store": "ram"}})
    with pytest.raises(ConfigError, match="data.pool_store='ram'"):
        check_data(cfg, check_files=False)
    det = OmegaConf.create({"data": {"pool_store": "disk"}, "task": {"crop_size": 32}})
    with pytest.raises(ConfigError, match="detect task keeps its proposal crops in memory"):
        detect.check_config(det)
