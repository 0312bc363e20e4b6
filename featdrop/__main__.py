"""``python -m featdrop ...``: the ``featdrop`` command, for a shell without the script on its PATH."""
import sys

from .cli import main

sys.exit(main())
