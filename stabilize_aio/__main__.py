"""``python -m stabilize_aio``: the command line."""

from ._cli import main

raise SystemExit(main())
