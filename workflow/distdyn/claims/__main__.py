"""python -m distdyn.claims: the claims rule's command (distdyn.claims.cli)."""
import sys

from .cli import main

sys.exit(main())
