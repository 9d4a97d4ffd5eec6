"""Widgets: panels, views and dialogs. They show data and emit signals; the controllers
(gui/controllers) decide what happens. Colours come from gui.theme."""
