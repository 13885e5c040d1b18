"""The live page (``diffusionbert serve``): a browser watches text being denoised, step by step.

:mod:`.jobs` checks a request and runs it on a pipeline with every state reported, :mod:`.scheduler` queues
the requests of every tab, :mod:`.server` streams their events to the page in ``static/``.
"""

from .jobs import Request, describe, generate
from .server import create_app, serve

__all__ = ["Request", "create_app", "describe", "generate", "serve"]
