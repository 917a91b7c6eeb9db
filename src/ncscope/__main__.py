"""``python -m ncscope`` runs the command-line interface."""

from ncscope.cli import main

raise SystemExit(main())
