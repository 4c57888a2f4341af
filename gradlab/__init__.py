"""gradlab: gradient dynamics in recurrent networks."""

__version__ = "0.1.0"
