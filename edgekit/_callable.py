"""Let ``edgekit.deploy(...)`` and ``edgekit.export(...)`` work although both are also submodules.

Importing a submodule sets it as an attribute of its parent, which would shadow the public
function of the same name; making the submodule callable keeps one spelling for users.
"""

from __future__ import annotations

import sys
import types
from typing import Any, Callable


def make_module_callable(module_name: str, function_name: str) -> None:
    module = sys.modules[module_name]

    class _CallableModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            function: Callable[..., Any] = getattr(self, function_name)
            return function(*args, **kwargs)

    module.__class__ = _CallableModule
