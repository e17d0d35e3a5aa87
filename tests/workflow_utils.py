"""Until tests/test_commands.py imports from helpers: the names it imports from here (the module is now helpers)."""
from helpers import ROOT, documented_commands, make_workdir, readme_python_snippets  # noqa: F401
