"""Built-in models: the demo network and the digits CNN."""
