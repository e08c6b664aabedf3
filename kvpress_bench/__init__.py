"""kvpress bench: the workbench's exported head labels run inside NVIDIA's kvpress.

Runs in its own virtual environment (``.venv-kvpress``: kvpress 0.5.5 needs transformers <5.3,
the workbench needs >=5.9) and never imports ``workbench``. ``make kvpress-bench`` builds the
environment, runs the tests in ``kvpress_bench/tests`` and the needle benchmark.

Modules: ``pattern`` (the DuoAttention-format export folder), ``presses`` (kvpress presses fed
from it), ``runner`` (model loading, trials, kvpress-style prefill + greedy decoding, and the
workbench's simulated budget in sdpa), ``bench`` (the benchmark and its table/figure).
``dump_trials.py`` is the one script that runs in the MAIN venv (it writes the trials JSON).
"""

__all__ = ["pattern", "presses", "runner"]
