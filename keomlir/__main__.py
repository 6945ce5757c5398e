"""`python -m keomlir ...`: the keomlir command without installing its script."""

from .cli import main

raise SystemExit(main())
