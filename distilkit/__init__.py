"""distilkit: shrink vision transformers by distillation and pruning."""

__version__ = "0.1.0"
