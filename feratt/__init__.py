"""feratt: synthetic face-expression training sets and the FERAtt network."""

__version__ = "0.1.0"
