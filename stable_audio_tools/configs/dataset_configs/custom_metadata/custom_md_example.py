"""Example custom metadata module for a dataset config's ``custom_metadata_module``.

``get_custom_metadata(info, audio)`` receives the item metadata (``path``, ``relpath``,
``seconds_start``, ...) and the processed audio chunk; the returned dict is merged into the
metadata. Here the prompt is the file's path relative to the dataset directory.
"""
from typing import Any, Dict


def get_custom_metadata(info: Dict[str, Any], audio: Any) -> Dict[str, Any]:
    """Use the relative file path as the text prompt."""
    return {"prompt": info["relpath"]}
