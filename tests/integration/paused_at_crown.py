"""An entry point whose champion move waits: ``python -m tests.integration.paused_at_crown <paused>
<resume> <module> [argument …]`` runs ``<module>`` (``projects.promote``, ``projects.rollback``)
as ``python -m`` would, except that ``model.registry.crown`` first creates the file ``<paused>``
and waits until the file ``<resume>`` exists.

So a real promotion or rollback stops mid-way, holding the alias lease and renewing it, for
tests/integration/test_alias_lease.py to watch, SIGKILL, or let go on. Nothing else changes.
"""

from __future__ import annotations

import runpy
import sys
import time
from pathlib import Path

from model import registry


def main() -> None:
    paused, resume, module, *arguments = sys.argv[1:]
    crown = registry.crown

    def crown_when_resumed(*args, **kwargs):
        Path(paused).touch()
        while not Path(resume).exists():
            time.sleep(0.05)
        return crown(*args, **kwargs)

    registry.crown = crown_when_resumed
    sys.argv = [module, *arguments]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
