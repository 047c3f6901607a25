"""One module per outside system. Only ``clients/<x>.py`` imports the library for ``x``."""
