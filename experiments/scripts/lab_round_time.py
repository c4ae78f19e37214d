"""Wall time and peak memory of a lab's suggest rounds on a 30 x 512 x 512 volume (issue 11).

    python experiments/scripts/lab_round_time.py WORKDIR [--data ../shared/data/epfl_hippocampus] [--override KEY=VALUE ...]

Builds an OME-Zarr of 30 sections of 512 x 512 (the 20 EPFL CA1 training sections cropped at the top
left, then 10 of them cropped at the bottom right: a stand-in of the right size, 5 nm voxels) and the
matching mitochondria labels, then times, each as its own process with default settings:

1. ``dualstream-suggest`` on a new project (encoder training + cold start),
2. ``dualstream-ingest`` of the first batch, painted from the ground truth by a scripted annotator,
3. ``dualstream-suggest`` again (U-Net training on 8 labels, pool scoring, selection, round files).

Prints one JSON object (last line): seconds and peak RSS of each step.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent


def build_volume(data: Path, out: Path) -> tuple[str, str]:
    """The 30 x 512 x 512 image (OME-Zarr) and labels (HDF5) from the EPFL sections in ``data``."""
    from PIL import Image

    from dualstream.volume import write_volume

    def stack(folder: Path) -> np.ndarray:
        secs = [np.asarray(Image.open(f))[..., 0] if np.asarray(Image.open(f)).ndim == 3 else np.asarray(Image.open(f))
                for f in sorted(folder.glob("*.png"))]
        return np.stack([s[:512, :512] for s in secs] + [s[-512:, -512:] for s in secs[:10]])

    image, labels = str(out / "em30.ome.zarr"), f"{out / 'em30_truth.h5'}:labels"
    write_volume(image, stack(data / "slices"), voxel_size=(5.0, 5.0, 5.0))
    write_volume(labels, stack(data / "mitochondrion"), voxel_size=(5.0, 5.0, 5.0))
    return image, labels


def timed(cmd: list[str]) -> dict[str, float]:
    """Run ``cmd``; its wall seconds and the peak RSS of the child (GiB)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # largest child so far, KiB -> GiB
    return {"seconds": round(time.perf_counter() - t0, 1), "max_rss_gib_so_far": round(peak, 2)}


def paint(project: Path, k: int, truth_spec: str, out: Path) -> str:
    """The scripted annotator: ground truth inside round ``k``'s boxes, 0 elsewhere."""
    import h5py

    from dualstream.project.layout import round_dir
    from dualstream.project.queries import QueryTable
    from dualstream.volume import open_volume

    table = QueryTable.read(round_dir(project, k) / "queries.csv")
    truth = open_volume(truth_spec).read()
    with h5py.File(out, "w") as f:
        f["labels"] = table.within_boxes(truth)
    return f"{out}:labels"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/epfl_hippocampus"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--override", action="append", default=[],
                        help="a config override for both suggest calls (repeatable), e.g. encoder=simclr")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    project = args.workdir / "project"
    if project.exists():
        raise SystemExit(f"{project} exists: give an empty WORKDIR")
    image, truth = build_volume(args.data, args.workdir)
    suggest = [str(BIN / "dualstream-suggest"), f"project={project}", f"data.image={image}", f"loop.batch={args.batch}", "progress=false",
               *args.override]
    out = {"volume": "30 x 512 x 512 (OME-Zarr, 5 nm)", "batch": args.batch, "overrides": args.override}
    out["suggest_cold_start"] = timed(suggest)
    labels = paint(project, 0, truth, args.workdir / "painted_0.h5")
    out["ingest"] = timed([str(BIN / "dualstream-ingest"), str(project), labels, "--label-threshold", "127"])
    out["suggest_round_1"] = timed(suggest)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
