#!/usr/bin/env python3
"""tc-appliance entry point: `python pipeline.py <verb>` (see `--help`)."""

import sys

from appliance.cli import main

if __name__ == "__main__":
    sys.exit(main())
