"""Headless subcommands over the same pipeline: parse, dispatch, one clear line per error."""
