"""Errors the engine raises for bad input; each message names the layer, file or value at fault."""


class PruneStudioError(Exception):
    """Base class: the CLI prints the message on one line, the GUI shows it in a dialog."""


class TraceError(PruneStudioError):
    pass


class PlanError(PruneStudioError):
    pass


class LoadError(PruneStudioError):
    pass


class VerificationError(PruneStudioError):
    pass


class ApproximateRefused(VerificationError):
    """An approximate-by-design result within its bounds that the caller did not accept.
    ``detail``: plain data to ask the user with (the kinds, their measured and bound differences)
    - no model or tensor, so a GUI task may keep it after the run."""

    def __init__(self, message: str, detail: dict | None = None):
        super().__init__(message)
        self.detail = detail or {}


class Cancelled(PruneStudioError):
    """Raised at a checkpoint when the user cancelled; the model is left untouched."""
