"""`python -m appliance <verb>`: the same command line as pipeline.py and tc-appliance."""

import sys

from appliance.cli import main

sys.exit(main())
