"""Allow `python -m protoevents.proxy.cli`."""

import sys

from protoevents.proxy.cli import main

sys.exit(main())
