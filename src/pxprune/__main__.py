"""``python -m pxprune`` (also what torchrun launches)."""

from .cli.main import main

raise SystemExit(main())
