"""Model sources (SOURCES), example inputs, atomic writes, export formats (EXPORTERS) and projects."""
