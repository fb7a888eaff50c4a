"""User-facing helpers: plotting utilities for demos (``aeiou``) and the Gradio interface."""
