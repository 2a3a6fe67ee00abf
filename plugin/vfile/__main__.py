"""``python -m plugin.vfile``: the vfile plugin process."""

import sys

from ..main import vfile_main

sys.exit(vfile_main())
