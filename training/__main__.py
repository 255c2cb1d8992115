"""python -m training ... (the entry point torchrun runs: torchrun -m training ...)."""

import sys

from training.cli import main

sys.exit(main())
