"""Giving the top-level name `kernels` to the package that owns it when a checkout's root is on sys.path."""
import importlib.machinery
import importlib.util
import os
import sys
import types


def hand_over_name(init_file: str) -> None:
    """Replace sys.modules["kernels"] (this folder, mid-import) with the `kernels` found on sys.path without the
    checkout's root; the import system returns whatever sys.modules holds once the import finishes. Without one,
    with a stand-in that reads as no package."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(init_file)))
    sys.modules.pop("kernels._top_level", None)  # loaded under the borrowed name; fastft.kernels._top_level is its own
    search = [p for p in sys.path if os.path.abspath(p or os.curdir) != root]
    spec = importlib.machinery.PathFinder.find_spec("kernels", search)
    if spec is None:
        sys.modules["kernels"] = _absent()
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernels"] = module
    spec.loader.exec_module(module)


def _absent() -> types.ModuleType:
    """A module with no file, no version and no names, as a bare folder on sys.path would import. The import must
    succeed: transformers <= 5.17 imports a `kernels` it finds without package metadata (it found this folder) and
    takes one with neither file nor version for a folder shadowing the name, i.e. not installed; raising there
    stopped `import transformers.modeling_utils`. Probes that import a name from it (`from kernels import
    get_kernel`, bitsandbytes) get an ImportError, as with no package."""
    module = types.ModuleType("kernels")
    module.__spec__ = importlib.machinery.ModuleSpec("kernels", None, is_package=True)
    module.__path__ = []

    def __getattr__(name: str):
        raise AttributeError(f"module 'kernels' has no attribute {name!r}: Hugging Face's kernels package is not "
                             "installed (the `kernels` here is the checkout's folder, which is fastft.kernels)")

    module.__getattr__ = __getattr__
    return module
