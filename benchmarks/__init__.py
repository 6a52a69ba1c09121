"""repocket against two hand-written redis-py programs, on one real redis-server (``make bench``).

Run it with ``python -m benchmarks`` (``--quick`` for a smoke run at N = 1,000,
``--sizes 10000,100000`` to choose the model sizes, ``--profile OP`` for a cProfile
of repocket's side of one operation, ``--scale`` for growth from 10k to 1M records).
:mod:`benchmarks.__main__` explains what is timed and how;
:mod:`benchmarks.minimal` is the minimal program (plain values, the simplest
indexes), :mod:`benchmarks.handwritten` the one that keeps repocket's layout,
:mod:`benchmarks.memory` measures bytes per record and :mod:`benchmarks.scale` growth.
"""
