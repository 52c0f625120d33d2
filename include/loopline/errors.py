"""The root of Loopline's own errors: bad input or state that no retry can fix.

Tasks turn these into AirflowFailException (see ``loopline.notifiers.fail_fast``), so a
wrong data version or a broken spec fails at once with its message, instead of being
retried twice like a network hiccup.
"""


class LooplineError(Exception):
    """A permanent, explained failure: the message says what is wrong and where."""
