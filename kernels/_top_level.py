"""Giving the top-level name `kernels` to the package that owns it when a checkout's root is on sys.path."""
import importlib.machinery
import importlib.util
import os
import sys


def hand_over_name(init_file: str) -> None:
    """Replace sys.modules["kernels"] (this folder, mid-import) with the `kernels` found on sys.path without the
    checkout's root; the import system returns whatever sys.modules holds once the import finishes. Without one,
    raise the ModuleNotFoundError an import of a missing package raises, so probes (`try: import kernels`) see none."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(init_file)))
    sys.modules.pop("kernels._top_level", None)  # loaded under the borrowed name; fastft.kernels._top_level is its own
    search = [p for p in sys.path if os.path.abspath(p or os.curdir) != root]
    spec = importlib.machinery.PathFinder.find_spec("kernels", search)
    if spec is None:
        del sys.modules["kernels"]
        raise ModuleNotFoundError("No module named 'kernels'", name="kernels")
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernels"] = module
    spec.loader.exec_module(module)
