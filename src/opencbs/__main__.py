"""``python -m opencbs``: the ``opencbs`` command (``opencbs.cli.main``), for a process that
knows its interpreter but not where the command's script is (``opencbs agent run`` starts each
job so: ``sys.executable -m opencbs backup …``)."""

from __future__ import annotations

import sys

from opencbs.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
