"""The one exception type of the mobility package."""


class MobilityError(RuntimeError):
    """SUMO failed, a file is missing or an input is malformed; the message names the culprit and the fix."""
