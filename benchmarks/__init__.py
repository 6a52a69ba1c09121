"""repocket against hand-written redis-py, on one real redis-server (``make bench``).

Run it with ``python -m benchmarks`` (``--quick`` for a smoke run at N = 1,000,
``--sizes 10000,100000`` to choose the model sizes, ``--profile OP`` for a cProfile
of repocket's side of one operation). :mod:`benchmarks.__main__` explains what is
timed and how; :mod:`benchmarks.handwritten` is the hand-written program.
"""
