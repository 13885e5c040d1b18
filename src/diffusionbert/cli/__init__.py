"""``diffusionbert`` command line: one module per command, parsing and printing only; the work lives in the
library. :func:`main` is the entry point."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
