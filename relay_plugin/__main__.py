"""Allow ``python -m relay_plugin``."""

from relay_plugin.cli import main

raise SystemExit(main())
