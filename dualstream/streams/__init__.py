"""The two streams: the data stream (frozen encoder -> typicality) and the task stream (model -> uncertainty)."""
