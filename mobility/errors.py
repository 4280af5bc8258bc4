"""The one exception type of the mobility package."""


class MobilityError(RuntimeError):
    """SUMO failed, a file is missing or an input is malformed; the message names the culprit and the fix."""


class EmptyRunError(MobilityError):
    """A run ended without a single participant, so its results mean nothing; the message says which stage was
    empty (no vehicles, none covered, none scheduled)."""
