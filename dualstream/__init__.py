"""dualstream: two-stream active learning for electron-microscopy connectomics.

Data flows one way::

    volume -> pool of patches -> two streams (task uncertainty, frozen-encoder typicality)
           -> acquisition -> oracle (simulated annotator) -> task model

Arrays are always ``z, y, x`` with voxel sizes in nanometres.
"""

__version__ = "0.1.0"
