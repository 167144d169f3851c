"""Measuring generators: FID (and IS, KID, precision/recall, intra-FID) from the Inception's
features of generated and reference images, under names that state the protocol."""
