"""Data: CIFAR-10 and MNIST decoding and caching (``cifar``), the image overlays (``overlays``) and the
overlay data sets built from them (``images``), spoken digits with background noise (``audio``), the shared
types and the overlay record (``base``), and every overlay's record by name (``records``)."""
