"""mmsa.training: dataset readers, preprocessing cache, trainer, MMSA metrics and ``mmsa-train`` / ``mmsa-eval``.

Imports ``mmsa.model`` (the network, features, checkpoints) and ``mmsa.media`` (decoding and face
detection shared with the live monitor), never ``mmsa.monitor``. See docs/training.md.
"""
