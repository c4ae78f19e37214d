"""The project directory on disk: ``project.json``, ``round_NNN/`` folders, file names, atomic writes.

See ``/work/notes/project_layout.md`` (issue 11) for the contract. Everything is ``z, y, x``; "input
voxels" are voxels of the user's image at full resolution; the pool grid is that image downsampled
in-plane by ``downsample`` (``f``). Layout::

    DIR/
      project.json         ProjectInfo (written by dualstream-suggest on its first call)
      config.yaml          the first suggest's composed config
      loop_state.npz       the loop's state (dualstream.state)
      round_000/           one folder per suggested batch
        queries.csv        dualstream.project.queries.QueryTable
        patches.h5, neuroglancer.json, why.png   (dualstream.project.outputs)
        answers.npz        dualstream.project.answers (written by dualstream-ingest)

The *open round* is the latest round with a ``queries.csv``, if it has no ``answers.npz`` yet.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dualstream.errors import ConfigError, DataError

PROJECT_FILE = "project.json"
CONFIG_FILE = "config.yaml"
STATE_FILE = "loop_state.npz"
QUERIES_FILE = "queries.csv"
PATCHES_FILE = "patches.h5"
NEUROGLANCER_FILE = "neuroglancer.json"
WHY_FILE = "why.png"
ANSWERS_FILE = "answers.npz"
#: project.json format this code writes and reads.
PROJECT_VERSION = 1
TASKS = ("segment", "detect")
_ROUND_RE = re.compile(r"^round_(\d{3,})$")


class NotAProjectError(DataError):
    """The directory has no ``project.json`` (dualstream-suggest has not been run on it)."""


def now_iso() -> str:
    """The current UTC time as ISO 8601 to the second (``2026-12-01T18:30:00+00:00``)."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def tmp_path_for(path: Path) -> Path:
    """The temporary file an atomic write of ``path`` goes through (same folder, never mistaken for it)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def fsync_dir(folder: Path) -> None:
    """Flush a directory entry (after ``os.replace``) so the rename survives a power cut; no-op where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes, before_commit: Any = None) -> Path:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, ``os.replace``.

    A process killed at any moment leaves either the old file (or none) or the new one, never half
    of it; at worst a ``.NAME.tmp-PID`` file remains, which no reader takes for ``NAME``.

    Args:
        path: destination file.
        data: the whole content.
        before_commit: optional callable run after the temp file is complete and synced, right
            before ``os.replace`` (used by tests to kill the writer at the worst moment).
    """
    path = Path(path)
    tmp = tmp_path_for(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if before_commit is not None:
            before_commit(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def remove_stale_tmp(path: str | Path) -> None:
    """Delete temp files left by killed atomic writes of ``path`` (other processes' ``.NAME.tmp-PID``)."""
    path = Path(path)
    mine = tmp_path_for(path).name
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        if stale.name != mine:
            stale.unlink(missing_ok=True)


@dataclass
class ProjectInfo:
    """``project.json``: what the project's pool was made from.

    Attributes:
        image: the image volume spec as the user gave it (``f.h5:raw``, a TIFF, a directory).
        shape: ``(Z, Y, X)`` of the image in input voxels.
        voxel_size: ``(z, y, x)`` nm of an input voxel.
        downsample: in-plane factor ``f`` from input voxels to the pool grid.
        patch_size: ``P``, side of a pool item in pool-grid pixels (``P * f`` input voxels).
        label_threshold: foreground is ``label > label_threshold`` when ingesting label volumes.
        task: ``"segment"`` (answers are masks) or ``"detect"`` (answers are true/false).
        created: ISO time of the first suggest.
        version: file format version (:data:`PROJECT_VERSION`).
        extra: keys of the file this version does not know, kept so a rewrite loses nothing.
    """

    image: str
    shape: tuple[int, int, int]
    voxel_size: tuple[float, float, float]
    downsample: int
    patch_size: int
    label_threshold: float = 0.0
    task: str = "segment"
    created: str = field(default_factory=now_iso)
    version: int = PROJECT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.shape = tuple(int(v) for v in self.shape)  # type: ignore[assignment]
        self.voxel_size = tuple(float(v) for v in self.voxel_size)  # type: ignore[assignment]
        self.downsample = int(self.downsample)
        self.patch_size = int(self.patch_size)
        self.label_threshold = float(self.label_threshold)
        self.version = int(self.version)
        self.image = str(self.image)

    @property
    def box_size(self) -> int:
        """Side of a pool item in input voxels (``patch_size * downsample``)."""
        return self.patch_size * self.downsample

    def to_dict(self) -> dict[str, Any]:
        known = {
            "version": self.version,
            "image": self.image,
            "shape": list(self.shape),
            "voxel_size": list(self.voxel_size),
            "downsample": self.downsample,
            "patch_size": self.patch_size,
            "label_threshold": self.label_threshold,
            "task": self.task,
            "created": self.created,
        }
        return {**self.extra, **known}

    def write(self, project: str | Path) -> Path:
        """Write ``DIR/project.json`` atomically (creating ``DIR``); returns its path."""
        project = Path(project)
        project.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        return atomic_write_bytes(project / PROJECT_FILE, text.encode())

    @classmethod
    def read(cls, project: str | Path) -> "ProjectInfo":
        """Read ``DIR/project.json``.

        Raises:
            NotAProjectError: no ``project.json`` in ``project``.
            DataError: the file is not JSON, or misses or mistypes a key.
            ConfigError: written by a newer format version.
        """
        project = Path(project)
        path = project / PROJECT_FILE
        if not path.is_file():
            raise NotAProjectError(
                f"{project} is not a dualstream project (no {PROJECT_FILE}); run dualstream-suggest project={project} first"
            )
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(
                f"{path}: cannot read ({type(err).__name__}: {err}); it is written by dualstream-suggest:"
                " restore it from a backup or start a new project directory"
            ) from err
        if not isinstance(raw, dict):
            raise DataError(f"{path}: expected a JSON object, got {type(raw).__name__}; restore the file written by dualstream-suggest")
        version = raw.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise DataError(f"{path}: 'version' missing or not an integer ({version!r}); restore the file written by dualstream-suggest")
        if version > PROJECT_VERSION:
            raise ConfigError(
                f"{path}: format version {version} is newer than this dualstream reads ({PROJECT_VERSION}); upgrade dualstream"
            )
        missing = [k for k in ("image", "shape", "voxel_size", "downsample", "patch_size") if k not in raw]
        if missing:
            raise DataError(f"{path}: missing {', '.join(missing)}; restore the file written by dualstream-suggest")
        names = {"version", "image", "shape", "voxel_size", "downsample", "patch_size", "label_threshold", "task", "created"}
        try:
            info = cls(
                image=raw["image"],
                shape=tuple(raw["shape"]),
                voxel_size=tuple(raw["voxel_size"]),
                downsample=raw["downsample"],
                patch_size=raw["patch_size"],
                label_threshold=raw.get("label_threshold", 0.0),
                task=raw.get("task", "segment"),
                created=str(raw.get("created", "")),
                version=version,
                extra={k: v for k, v in raw.items() if k not in names},
            )
        except (TypeError, ValueError) as err:
            raise DataError(f"{path}: a value has the wrong type ({err}); restore the file written by dualstream-suggest") from err
        if len(info.shape) != 3 or len(info.voxel_size) != 3:
            raise DataError(f"{path}: 'shape' and 'voxel_size' need 3 values (z, y, x), got {list(info.shape)} and {list(info.voxel_size)}")
        if info.downsample < 1 or info.patch_size < 1:
            raise DataError(f"{path}: 'downsample' and 'patch_size' must be >= 1, got {info.downsample} and {info.patch_size}")
        if info.task not in TASKS:
            raise DataError(f"{path}: 'task' is {info.task!r}, expected one of {', '.join(TASKS)}")
        return info


def round_dir(project: str | Path, k: int) -> Path:
    """``DIR/round_NNN`` of round ``k`` (``round_000``, ``round_001``, ...); not created here."""
    if int(k) < 0:
        raise ValueError(f"round must be >= 0, got {k}")
    return Path(project) / f"round_{int(k):03d}"


def list_rounds(project: str | Path) -> list[int]:
    """Round numbers of the ``round_NNN`` folders in ``project``, ascending (whatever they hold)."""
    project = Path(project)
    if not project.is_dir():
        return []
    found = []
    for child in project.iterdir():
        m = _ROUND_RE.match(child.name)
        if m and child.is_dir():
            found.append(int(m.group(1)))
    return sorted(found)


def queried_rounds(project: str | Path) -> list[int]:
    """Rounds that hold a ``queries.csv``, ascending."""
    return [k for k in list_rounds(project) if (round_dir(project, k) / QUERIES_FILE).is_file()]


def answered_rounds(project: str | Path) -> list[int]:
    """Rounds that hold both ``queries.csv`` and ``answers.npz`` (ingested), ascending."""
    return [k for k in queried_rounds(project) if (round_dir(project, k) / ANSWERS_FILE).is_file()]


def open_round(project: str | Path) -> int | None:
    """The round waiting for answers: the latest round with a ``queries.csv``, if it has no
    ``answers.npz``; ``None`` when there is no round or the latest one is ingested already."""
    rounds = queried_rounds(project)
    if not rounds:
        return None
    last = rounds[-1]
    return None if (round_dir(project, last) / ANSWERS_FILE).exists() else last
