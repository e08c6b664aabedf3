"""Datasets and generators the analyses run on (needles, repeated sequences, prompt files)."""
