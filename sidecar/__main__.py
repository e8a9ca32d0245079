"""`python -m sidecar` runs the CLI."""

from sidecar.cli import main

raise SystemExit(main())
