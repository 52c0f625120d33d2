"""The root of Loopline's own errors: bad input or state that no retry can fix.

Every Loopline task fails at once on these, without its retries: ``dag_defaults.default_args``
gives every task Airflow's ``retry_policy`` (``PERMANENT_ERRORS``), which fails a task whose
exception is a ``LooplineError``, so a wrong data version or a broken spec fails with its
message instead of being retried twice like a network hiccup. ``RetryableError`` is the one
exception: explained, but a retry can heal it (a concurrent writer won a race).
"""


class LooplineError(Exception):
    """A permanent, explained failure: the message says what is wrong and where."""


class RetryableError(LooplineError):
    """An explained failure that a retry can heal (e.g. an optimistic-locking conflict): retried as usual."""
