"""``python -m weakdml`` (and ``torchrun ... -m weakdml``): the command line."""

import sys

from weakdml.cli import main

sys.exit(main())
