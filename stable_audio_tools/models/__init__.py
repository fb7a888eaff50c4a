"""Model definitions and factories."""
