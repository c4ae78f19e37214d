"""A lab's annotation project on its own volume: suggest -> annotate -> ingest -> retrain.

The project directory holds the loop's state, one ``round_NNN/`` folder per suggested batch (queries,
patches, viewer states, a plot of why) and the answers ingested for it. The simulated benchmark loop
and a human annotator run through the same loop code (:mod:`dualstream.loop`); only the annotator
differs (``annotator=simulated`` reads ground truth, ``annotator=files`` reads ingested answers).
"""
