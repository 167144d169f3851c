"""Training a GAN: the loop, and everything a run holds while it trains (models, optimisers, losses,
EMA, DiffAugment, checks for NaNs and collapse)."""
