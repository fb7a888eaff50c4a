"""The batch helpers moved to :mod:`.common` (the module every training family shares); importable from here
too."""
from .common import encode_to_latents, padding_masks_from_metadata, split_batch, swapped_child

__all__ = ["split_batch", "encode_to_latents", "padding_masks_from_metadata", "swapped_child"]
