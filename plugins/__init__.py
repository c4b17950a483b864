"""Built-in analyzer plugins. Each registers through the ``pcapwire`` entry-point group,
exactly as a third-party plugin does."""
