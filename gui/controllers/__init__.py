"""Controllers, one per concern: they hold what the window does (load, select, prune, export,
projects, accuracy) and talk to the widgets and the worker through signals and method calls.
They share one :class:`gui.controllers.context.Context`."""
