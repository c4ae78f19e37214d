"""Per-format readers and writers behind :mod:`dualstream.volume` (the public facade).

One module per format family: :mod:`.hdf5`, :mod:`.images` (TIFF, directories of sections, single
images), :mod:`.zarr_store` (Zarr v2/v3 and OME-Zarr) and :mod:`.n5` (through TensorStore). Each reader
returns an :class:`~dualstream.formats.base.Opened`: a lazy ``(z, y, x)`` array plus the voxel size it
found (or ``None``) and where it came from. Heavy libraries (zarr, tensorstore) are imported on use.
"""
