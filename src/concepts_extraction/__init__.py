"""Top-N ImageNet concepts for every image in a tree of folders."""

__version__ = "0.1.0"
