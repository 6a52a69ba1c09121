"""I/O: the executors that send what plans decide, and nothing else talks to Redis.

:func:`repocket.io.sync.run` drives a plan on a ``redis.Redis`` and
:func:`repocket.io.asyncio.arun` on a ``redis.asyncio.Redis``. Both send each
round (:mod:`repocket.plan.rounds`) as one round trip, run scripts at most
once (loading them on NOSCRIPT), and turn redis-py errors into repocket's, in
:mod:`repocket.io.errors`, the one place that does.
"""
