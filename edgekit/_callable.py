"""The one trick for the top-level verbs: ``edgekit.deploy(...)``, ``edgekit.export(...)`` and
``edgekit.compress(...)`` work although each is also a module of the package.

Importing a submodule sets it as an attribute of its parent (``import edgekit.deploy`` makes
``edgekit.deploy`` the module), which would shadow the public function of the same name; making
those three modules callable keeps one spelling for users, and ``edgekit.deploy.DeployOptions``
still names the class. Nothing else uses it: inside a package, bind the verb after importing its
module instead (see ``edgekit/compress/__init__.py``).
"""

from __future__ import annotations

import sys
import types
from typing import Any, Callable


def make_module_callable(module_name: str, function_name: str) -> None:
    """Calling the module ``module_name`` calls its function ``function_name``."""
    module = sys.modules[module_name]

    class _CallableModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            function: Callable[..., Any] = getattr(self, function_name)
            return function(*args, **kwargs)

    module.__class__ = _CallableModule
