"""llmctl: from raw text to a trained small language model, from one command line."""

__version__ = "0.1.0"
