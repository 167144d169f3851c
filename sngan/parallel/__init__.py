"""One process or several: the processes torchrun starts, the device each one uses, and the
collectives between them, which do nothing when there is one process."""
