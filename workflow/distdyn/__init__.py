"""distdyn: distillation dynamics of Vision Transformers."""

__version__ = "0.1.0"
