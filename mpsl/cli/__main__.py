"""`python -m mpsl.cli ...`, as `mpsl ...` (nodes/launch.py starts nodes this way)."""

import sys

from mpsl.cli import main

sys.exit(main())
