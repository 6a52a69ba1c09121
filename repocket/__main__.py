"""``python -m repocket``: the command line."""

from repocket.cli import main

raise SystemExit(main())
