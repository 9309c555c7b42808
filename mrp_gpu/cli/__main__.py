"""``python -m mrp_gpu.cli``: the ``mrp-gpu`` command (torchrun launches it this way)."""

import sys

from . import main

sys.exit(main())
