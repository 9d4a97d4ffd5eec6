"""Worker-side jobs: code that runs off the GUI thread (loading, analysis, layout, pruning,
export, sensitivity, training). Nothing here imports QtWidgets or QtGui; QtCore only, for the
signals that carry results back to the GUI thread."""
