"""A pool kept on disk (``data.pool_store=disk``): patches written once, read back a batch at a time.

With ``data.pool_store=memory`` (the default) the pool is one float32 array in memory, which for a
volume of ``V`` voxels costs about ``4 V`` bytes. On disk the patches are stored once as uint8
(``round(x * 255)``) in a chunked HDF5 file, one file per part (``pool.h5``, ``test.h5``), and every
consumer (encoder training and embedding, pool scoring, the annotator) reads the items it needs, so
a run's peak memory grows with the batch, not with the volume.

File layout (HDF5, written by :class:`PatchStoreWriter`, read by :class:`PatchStore`):

- ``images``: ``(N, P, P)`` (3D blocks ``(N, D, P, P)``) uint8, chunks of :data:`CHUNK_ITEMS` items;
  the float value of a pixel is ``u / 255`` (:func:`dequantise`);
- ``labels``: same shape, uint8 ``{0, 1}`` ground truth (all 0 for an unlabelled volume), lzf-compressed;
- ``ignore_share`` ``(N,)`` float32 and ``origins`` ``(N, 3)`` int64 (see :class:`dualstream.patches.PatchPool`);
- attributes: ``version``, ``complete`` (set last), ``digest`` (blake2b of the image bytes as written,
  with the shape: cache keys and the loop state's pool fingerprint use it instead of reading the pool),
  ``images_any`` / ``labels_any`` (whether any byte is nonzero), ``voxel_size``, ``source``.

A file is written under a temporary name and renamed when complete, so a killed run never leaves a
half-written store that a later run would take for a whole one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from dualstream.errors import ConfigError, DataError

STORE_VERSION = 1
#: Items per HDF5 chunk: 32 tiles of 64 x 64 px are 128 KiB. HDF5 reads (and for the lzf labels,
#: decompresses) whole chunks, so a training batch of random items costs one chunk per item: small
#: chunks keep that cheap (256-item chunks made random batches ~10x slower), pool-order reads span several.
CHUNK_ITEMS = 32
#: HDF5 chunk cache per open file (bytes): a few dozen chunks, so pool-order reads never re-read one.
CHUNK_CACHE = 64 * 2**20
MODES = ("memory", "disk")


def quantise(images: np.ndarray) -> np.ndarray:
    """float ``[0, 1]`` -> uint8 ``round(x * 255)`` (values outside ``[0, 1]`` clipped), same shape."""
    return np.rint(np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0) * np.float32(255)).astype(np.uint8)


def dequantise(values: np.ndarray) -> np.ndarray:
    """uint8 -> float32 ``u / 255`` in ``[0, 1]``, same shape (what a disk pool returns)."""
    return np.divide(values, np.float32(255), dtype=np.float32)


def quantised(images: np.ndarray) -> np.ndarray:
    """``dequantise(quantise(images))``: an in-memory pool exactly as a disk pool would hold it (float32)."""
    return dequantise(quantise(images))


def pool_store_mode(data: Any) -> str:
    """``data.pool_store`` checked: ``memory`` (default when absent) or ``disk``.

    Raises:
        ConfigError: another value, or ``disk`` with simulated artifact injection (which rewrites the
            whole pool in memory).
    """
    mode = data.get("pool_store") or "memory"
    if mode not in MODES:
        raise ConfigError(f"data.pool_store={mode!r}: expected memory (the pool as one array) or disk (a chunked uint8 file read in batches)")
    if mode == "disk" and float(data.get("inject_artifacts") or 0) > 0:
        raise ConfigError(
            f"data.pool_store=disk cannot be combined with data.inject_artifacts={data.get('inject_artifacts')}: simulated"
            " artifacts rewrite the whole pool in memory; set data.inject_artifacts=0 (give real artifacts as data.ignore)"
            " or data.pool_store=memory"
        )
    return mode


class PatchStoreWriter:
    """Append patches to a new store file; :meth:`close` makes it visible under ``path``.

    Args:
        path: the ``.h5`` file to create (replaced if it exists, once complete).
        item_shape: ``(P, P)`` or ``(D, P, P)``.
        chunk_items: items per HDF5 chunk.
    """

    def __init__(self, path: str | Path, item_shape: Sequence[int], chunk_items: int = CHUNK_ITEMS):
        import h5py

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(self.path.name + f".tmp{os.getpid()}")
        self.item_shape = tuple(int(s) for s in item_shape)
        self.file = h5py.File(self.tmp, "w")
        chunks = (int(chunk_items), *self.item_shape)
        # Images uncompressed (EM texture compresses little, reads stay cheap); 0/1 labels shrink a lot with lzf.
        for name, compression in (("images", None), ("labels", "lzf")):
            self.file.create_dataset(
                name, shape=(0, *self.item_shape), maxshape=(None, *self.item_shape), dtype=np.uint8, chunks=chunks, compression=compression
            )
        self.file.create_dataset("ignore_share", shape=(0,), maxshape=(None,), dtype=np.float32, chunks=(4096,))
        self.file.create_dataset("origins", shape=(0, 3), maxshape=(None, 3), dtype=np.int64, chunks=(4096, 3))
        self.n = 0
        self.hash = hashlib.blake2b(digest_size=16)
        self.any = {"images": False, "labels": False}

    def append(self, images: np.ndarray, labels: np.ndarray, ignore_share: np.ndarray, origins: np.ndarray) -> None:
        """Add ``B`` items: ``images`` float ``[0, 1]`` ``(B, *item_shape)``, ``labels`` 0/1, ``ignore_share`` ``(B,)``, ``origins`` ``(B, 3)``."""
        b = len(images)
        if tuple(images.shape[1:]) != self.item_shape or len(labels) != b or len(ignore_share) != b or len(origins) != b:
            raise ValueError(f"append needs B items of shape {self.item_shape} and B labels / shares / origins, got {images.shape}, {len(labels)}, {len(ignore_share)}, {len(origins)}")
        if b == 0:
            return
        u8 = quantise(images)
        lab = np.asarray(labels, dtype=np.uint8)
        self.hash.update(np.ascontiguousarray(u8).data)
        self.any["images"] |= bool(u8.any())
        self.any["labels"] |= bool(lab.any())
        for name, value in (("images", u8), ("labels", lab), ("ignore_share", np.asarray(ignore_share, dtype=np.float32)),
                            ("origins", np.asarray(origins, dtype=np.int64))):
            ds = self.file[name]
            ds.resize(self.n + b, axis=0)
            ds[self.n : self.n + b] = value
        self.n += b

    def close(self, voxel_size: Sequence[float], source: str) -> "PatchStore":
        """Finish the file (digest, attributes), rename it to ``path`` and open it for reading."""
        shape = (self.n, *self.item_shape)
        attrs = self.file.attrs
        attrs["version"] = STORE_VERSION
        attrs["digest"] = hashlib.blake2b(f"{shape}".encode() + self.hash.digest(), digest_size=16).hexdigest()
        attrs["images_any"], attrs["labels_any"] = self.any["images"], self.any["labels"]
        attrs["voxel_size"] = np.asarray(voxel_size, dtype=np.float64)
        attrs["source"] = str(source)
        attrs["complete"] = True
        self.file.close()
        os.replace(self.tmp, self.path)
        return PatchStore(self.path)

    def abort(self) -> None:
        """Drop the unfinished file."""
        try:
            self.file.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class PatchStore:
    """One array of a store file, indexable like an ``(N, ...)`` numpy array and read lazily.

    ``store[i]``, ``store[a:b]``, ``store[indices]`` (int arrays in any order, repeats allowed, or a
    bool mask) return numpy arrays: float32 in ``[0, 1]`` for ``field="images"``, uint8 for
    ``field="labels"``. Nothing else is held in memory (the file is opened on first read, in each
    process that reads it: a store pickles without its handle). ``np.asarray(store)`` is refused, so
    code that would silently read the whole pool fails loudly instead.

    Attributes:
        path: the ``.h5`` file; ``field``: ``images`` | ``labels``.
        shape: ``(N, P, P)`` or ``(N, D, P, P)``; ``dtype``: float32 (images) or uint8 (labels).
        digest: content digest of the images (32 hex digits), computed while writing.
    """

    def __init__(self, path: str | Path, field: str = "images"):
        import h5py

        if field not in ("images", "labels"):
            raise ValueError(f"field must be images or labels, got {field!r}")
        self.path, self.field = Path(path), field
        try:
            with h5py.File(self.path, "r") as f:
                if not f.attrs.get("complete", False) or int(f.attrs.get("version", -1)) != STORE_VERSION:
                    raise DataError(f"{self.path}: not a complete pool store of version {STORE_VERSION}; delete it and run again")
                self.shape = tuple(int(s) for s in f[field].shape)
                self.digest = str(f.attrs["digest"])
                self._any = bool(f.attrs[f"{field}_any"])
                self.voxel_size = tuple(float(v) for v in f.attrs["voxel_size"])
                self.source = str(f.attrs["source"])
        except OSError as err:
            raise DataError(f"{self.path}: cannot read the pool store ({err}); delete it and run again") from err
        self.dtype = np.dtype(np.float32 if field == "images" else np.uint8)
        self._file: Any = None

    # -- array-like surface ------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"PatchStore({str(self.path)!r}, field={self.field!r}, shape={self.shape})"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError(f"{self!r}: a disk pool is read in batches (store[a:b], store[indices], iter_batches), never as one array")

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_file"} | {"_file": None}

    def any(self) -> bool:
        """Whether any stored value is nonzero (recorded while writing)."""
        return self._any

    @property
    def labels(self) -> "PatchStore":
        """The ground-truth labels of the same items, uint8 ``{0, 1}``, read lazily."""
        return PatchStore(self.path, "labels")

    def read_small(self, name: str) -> np.ndarray:
        """A per-item array of the file (``ignore_share``, ``origins``), whole: ``O(N)`` small values."""
        return self._dataset(name)[...]

    def _dataset(self, name: str | None = None) -> Any:
        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r", rdcc_nbytes=CHUNK_CACHE, rdcc_nslots=10007)
        return self._file[name or self.field]

    def _convert(self, raw: np.ndarray) -> np.ndarray:
        return dequantise(raw) if self.field == "images" else raw

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):  # store[idx, ...]: the item axis lazily, the rest in memory
            head = self[key[0]]
            return head[(slice(None), *key[1:])] if np.ndim(key[0]) or isinstance(key[0], slice) else head[key[1:]]
        n = len(self)
        if isinstance(key, (int, np.integer)):
            i = int(key) + n if int(key) < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"index {int(key)} is out of range for a pool of {n} items")
            return self._convert(self._dataset()[i])
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                return self._convert(self._dataset()[start:max(start, stop)])
            key = np.arange(start, stop, step)
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"a boolean index must have shape ({n},), got {idx.shape}")
            idx = np.flatnonzero(idx)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"pool items are indexed by integers, slices or a boolean mask, got dtype {idx.dtype}")
        idx = idx.astype(np.int64).ravel()
        if idx.size == 0:
            return np.zeros((0, *self.shape[1:]), dtype=self.dtype)
        idx = np.where(idx < 0, idx + n, idx)
        if idx.min() < 0 or idx.max() >= n:
            raise IndexError(f"indices out of range for a pool of {n} items (got {int(np.asarray(key).min())} .. {int(np.asarray(key).max())})")
        uniq, inverse = np.unique(idx, return_inverse=True)
        lo, hi = int(uniq[0]), int(uniq[-1]) + 1
        ds = self._dataset()
        if hi - lo <= 2 * len(uniq):  # dense (pool order, a contiguous batch): one slice read
            raw = ds[lo:hi][uniq - lo]
        else:  # scattered (random training draws): one read per item, ~40x faster than h5py's point selection
            raw = np.stack([ds[int(i)] for i in uniq])
        return self._convert(raw[inverse.ravel()])

    def iter_batches(self, batch: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, items[start : start + batch])`` over the whole store, in pool order."""
        for start in range(0, len(self), max(1, int(batch))):
            yield start, self[start : start + batch]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def store_folder(data: Any, cache_dir: str | Path | None, run_dir: str | Path) -> Path:
    """Where a ``data`` config's disk pool lives: ``cache_dir/pools/KEY`` (shared by runs with the same
    data and files), or ``run_dir/pool_store`` without a cache.

    ``KEY`` hashes the resolved data config (``pool_store`` left out) and the size and modification
    time of every file or folder it names, so a changed volume gets a new store.
    """
    if cache_dir is None:
        return Path(run_dir) / "pool_store"
    from omegaconf import DictConfig, OmegaConf

    spec = OmegaConf.to_container(data, resolve=True) if isinstance(data, DictConfig) else dict(data)
    spec = {k: v for k, v in spec.items() if k != "pool_store"}
    stats = {}
    for key in ("image", "labels", "ignore", "test_image", "test_labels"):
        value = spec.get(key)
        if isinstance(value, str):
            for candidate in (value, value.rsplit(":", 1)[0]):
                if os.path.exists(candidate):
                    st = os.stat(candidate)
                    stats[key] = [candidate, st.st_size, st.st_mtime_ns]
                    break
    text = json.dumps([STORE_VERSION, spec, stats], sort_keys=True, default=str)
    return Path(cache_dir) / "pools" / hashlib.sha256(text.encode()).hexdigest()[:16]
