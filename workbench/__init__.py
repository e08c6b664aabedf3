"""Attention Workbench: find out what each attention head of a language model does."""

__version__ = "0.1.0"
