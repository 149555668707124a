"""``python -m pxprune`` (also what torchrun launches)."""

from .cli import main

raise SystemExit(main())
