"""``python -m plugin.vfile``: the vfile plugin process."""

import sys

from .main import main

sys.exit(main())
