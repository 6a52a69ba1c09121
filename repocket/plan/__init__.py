"""Planning: code that decides which commands to send to Redis, and does no I/O.

A *plan* is a generator. It yields *rounds* (:mod:`repocket.plan.rounds`): a
pipeline of commands, a script call, a pause; an executor
(:mod:`repocket.io`) sends each round and sends the replies back into the
plan, or throws the error into it. What the plan returns is the result of the
operation. The sync and async executors drive the same plans, so both do the
same Redis work, in the same round trips, with the same errors.

Modules: :mod:`~repocket.plan.rounds` (what can be yielded),
:mod:`~repocket.plan.load` (fetching records, resolving Pointers),
:mod:`~repocket.plan.write` (the write script: save, delete, increments,
appends), :mod:`~repocket.plan.lookups` (what each lookup means),
:mod:`~repocket.plan.select` (how a query finds, orders, counts and streams
its records), :mod:`~repocket.plan.audit` (check and reindex).
"""
