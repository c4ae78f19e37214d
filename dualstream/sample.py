"""The bundled sample: a compact HDF5 made from the public EPFL/Lucchi CA1 hippocampus FIB-SEM set.

The sample ships inside the package so that the demo and the tests need no download. It is built
once by :func:`build_sample` from ``../shared/data/epfl_hippocampus`` (a directory with ``slices/``,
``mitochondrion/`` and ``PSD/`` PNG sections)::

    python -m dualstream.sample ../shared/data/epfl_hippocampus

Layout of the file: datasets ``image`` (uint8), ``mitochondrion`` and ``PSD`` (uint8, 255 = foreground),
all ``(z, y, x)``, with a ``voxel_size`` attribute in nm (``z, y, x``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dualstream.patches import downsample
from dualstream.volume import open_volume

SAMPLE_PATH = Path(__file__).parent / "sample_data" / "epfl_hippocampus_sample.h5"
SOURCE_VOXEL_NM = (5.0, 5.0, 5.0)  # EPFL/Lucchi FIB-SEM is ~5 nm isotropic
MASKS = ("mitochondrion", "PSD")


def sample_path() -> str:
    """Absolute path of the bundled sample (an OmegaConf resolver: ``${sample_path:}``)."""
    return str(SAMPLE_PATH)


def build_sample(src: Path, out: Path = SAMPLE_PATH, n_sections: int = 12, factor: int = 2) -> Path:
    """Write the sample: ``n_sections`` evenly spaced sections, downsampled ``factor`` x in-plane."""
    import h5py

    image = open_volume(src / "slices", SOURCE_VOXEL_NM, role="sample source")
    chosen = np.linspace(0, len(image) - 1, n_sections).round().astype(int)
    out.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(out, "w") as f:
        f.attrs["voxel_size"] = (SOURCE_VOXEL_NM[0], SOURCE_VOXEL_NM[1] * factor, SOURCE_VOXEL_NM[2] * factor)
        f.attrs["source"] = "EPFL CA1 hippocampus FIB-SEM (Lucchi et al. 2012), sections " + ",".join(
            Path(image.data.files[z]).name for z in chosen
        )
        img = np.stack([downsample(image.section(z).astype(np.float32), factor) for z in chosen])
        f.create_dataset("image", data=img.round().astype(np.uint8), chunks=(1, *img.shape[1:]), compression="gzip")
        for name in MASKS:
            masks = open_volume(src / name, SOURCE_VOXEL_NM, role="sample source")
            fg = np.stack([downsample((masks.section(z) > 127).astype(np.float32), factor) >= 0.5 for z in chosen])
            f.create_dataset(
                name, data=fg.astype(np.uint8) * 255, chunks=(1, *fg.shape[1:]), compression="gzip"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="epfl_hippocampus directory (slices/, mitochondrion/, PSD/)")
    parser.add_argument("--out", type=Path, default=SAMPLE_PATH)
    args = parser.parse_args()
    print(build_sample(args.src, args.out))


if __name__ == "__main__":
    main()
