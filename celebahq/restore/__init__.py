"""Restoration networks for `celebahq build`: JPEG cleanup and 4× super-resolution (models, training, inference,
evaluation). Shipped weights live in celebahq/restore/weights/."""
