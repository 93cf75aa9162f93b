"""``python -m stabilize_aio``: the command line."""

from .cli.main import main

raise SystemExit(main())
