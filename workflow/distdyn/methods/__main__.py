"""python -m distdyn.methods: every built-in distillation method's declaration (distdyn.methods.describe)."""
import sys

from ..errors import cli
from . import main

sys.exit(cli(main)())
