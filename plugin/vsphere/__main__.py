"""``python -m plugin.vsphere``: the vsphere plugin process."""

import sys

from .main import main

sys.exit(main())
