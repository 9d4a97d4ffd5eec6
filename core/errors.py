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


class Cancelled(PruneStudioError):
    """Raised at a checkpoint when the user cancelled; the model is left untouched."""
