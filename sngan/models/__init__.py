"""The networks: the paper's generators and discriminators with spectral normalisation, and drawing
images from a trained generator."""
