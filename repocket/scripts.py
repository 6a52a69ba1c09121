"""Where the Lua scripts' registry lived before: it is :mod:`repocket.io.scripts` now."""

from repocket.io.scripts import INCLUDES, UNKNOWN_OUTCOME, Script, get

__all__ = ["INCLUDES", "UNKNOWN_OUTCOME", "Script", "get"]
