"""A module that takes CLI_TEST_LOAD_DELAY seconds to import and, like torch, cannot be
imported again in a process where an earlier import of it was cut short: the first import
leaves process-wide state behind, as torch's C extensions do, and a second one fails the way
torch does after Ctrl-C ("SystemError ... bad call flags")."""

from __future__ import annotations

import os
import time

_STARTED = "BEDROCK_MISTRAL_TEST_SLOW_IMPORT_STARTED"

if os.environ.get(_STARTED) == str(os.getpid()):
    raise SystemError("bad call flags (imported again after an interrupted import)")
os.environ[_STARTED] = str(os.getpid())
time.sleep(float(os.environ.get("CLI_TEST_LOAD_DELAY", "3")))
