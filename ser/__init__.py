"""Speech emotion recognition: audio in, one probability per emotion out."""

__version__ = "0.1.0"
