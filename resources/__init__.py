"""Data files of the PruneStudio GUI: colour themes (themes/*.json), the Qt stylesheet template
(style.qss) and toolbar icons (icons/*.svg). They are read with importlib.resources (see
gui/theme.py), so they work the same from a checkout, a wheel or a zip."""
