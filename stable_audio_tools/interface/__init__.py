"""User-facing helpers: the Gradio interface, and upstream's plotting module path ``aeiou`` (which re-exports
:mod:`stable_audio_tools.plotting`)."""
