"""Lightning modules: the contrastive encoder (data stream) and the segmentation model (task stream)."""
