"""fuzzkv's version, in a leaf: the modules that print it import it from here, never from the package's public face
(which re-exports the API, and importing it from inside would close a circle)."""

__version__ = "0.1.0"
