"""Config builders: JSON model config -> model objects, one module per model family.

Builders import the model classes; model modules never import a builder (the model modules re-export their
upstream-named builders lazily, through a module ``__getattr__``). :mod:`stable_audio_tools.models.factory`
dispatches a full model config to the builder the model-family registry names. See docs/architecture.md.
"""
