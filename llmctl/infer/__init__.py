"""Inference: open a checkpoint once, generate, chat."""
