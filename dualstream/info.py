"""``dualstream-info PATH [--json]``: what a volume is, as dualstream reads it.

Prints the format, shape ``(z, y, x)``, dtype, voxel size in nm and where it came from, the chunking
and the size in bytes (uncompressed), reading metadata only. ``--json`` prints one JSON object
instead. A path dualstream cannot read ends in one ``dualstream-info: error: ...`` line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dualstream.errors import DualstreamError

EXIT_USER_ERROR = 2


def describe(spec: str) -> dict[str, Any]:
    """The facts ``dualstream-info`` prints, as a JSON-ready dict (keys: ``path``, ``format``,
    ``shape``, ``dtype``, ``voxel_size_nm``, ``voxel_size_from``, ``chunks``, ``nbytes``)."""
    from dualstream.volume import open_volume

    vol = open_volume(spec, None, role="PATH")
    return {
        "path": spec,
        "format": vol.format,
        "shape": list(vol.shape),
        "dtype": str(vol.dtype),
        "voxel_size_nm": list(vol.voxel_size),
        "voxel_size_from": vol.voxel_size_from,
        "chunks": list(vol.chunks) if vol.chunks else None,
        "nbytes": vol.nbytes,
    }


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def format_text(info: dict[str, Any]) -> str:
    """The human-readable lines for :func:`describe`'s dict."""
    z, y, x = info["shape"]
    vz, vy, vx = (f"{v:g}" for v in info["voxel_size_nm"])
    chunks = " x ".join(str(c) for c in info["chunks"]) + " (z, y, x)" if info["chunks"] else "none (contiguous)"
    return "\n".join(
        [
            f"path:        {info['path']}",
            f"format:      {info['format']}",
            f"shape:       {z} x {y} x {x} (z, y, x)",
            f"dtype:       {info['dtype']}",
            f"voxel size:  {vz} x {vy} x {vx} nm (z, y, x), {info['voxel_size_from']}",
            f"chunks:      {chunks}",
            f"size:        {info['nbytes']} bytes uncompressed ({_human(info['nbytes'])})",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="dualstream-info",
        description="Describe a volume as dualstream reads it: format, shape (z, y, x), dtype, voxel size, chunks, size.",
    )
    parser.add_argument(
        "path", help="file.h5:dataset, path.zarr[/name], path.ome.zarr, path.n5/name, a .tif, or a directory of sections"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)
    try:
        info = describe(args.path)
    except DualstreamError as err:
        print(f"dualstream-info: error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    print(json.dumps(info) if args.json else format_text(info))


if __name__ == "__main__":
    main()
