"""`python -m adu_assets.cli`: the same as the `adu` command."""

import sys

from adu_assets.cli import main

sys.exit(main())
