"""diffusionbert: a pre-trained BERT-family masked LM as the reverse process of absorbing-state diffusion.

``__version__`` is the installed distribution's (pyproject.toml's), so ``--version`` cannot differ from it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("diffusionbert")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
