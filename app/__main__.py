"""`python -m app ...` is the `switchboard` command."""

import sys

from app.cli import main

sys.exit(main())
