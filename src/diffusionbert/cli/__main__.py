"""``python -m diffusionbert.cli``: the command line, e.g. under ``torchrun`` or ``accelerate launch``."""

import sys

from .main import main

sys.exit(main())
