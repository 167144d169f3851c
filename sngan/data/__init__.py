"""Training images: data sets by name and their on-disk formats, decoded once into one uint8 tensor,
and the batches a run draws from it."""
