"""``python -m monitor``."""

from monitor.tools.cli import main

raise SystemExit(main())
