"""The import contract of README's Layout table: every fastft package imports only the layers it may, and no two
packages import each other. An AST walk over every import statement, the ones inside functions included."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fastft"
KERNELS = PACKAGE.parent / "kernels"  # installed as fastft.kernels

# layer -> the layers it may import. fastft/errors.py (the public home of FastftError) belongs to runtime.
MAY_IMPORT = {
    "kernels": set(),
    "runtime": set(),
    "config": {"runtime"},
    "data": {"config", "runtime"},
    "models": {"config", "data", "runtime", "kernels"},
    "patching": {"models", "data", "config", "runtime", "kernels"},
    "training": {"config", "data", "models", "patching", "runtime"},
    "metrics": {"runtime"},
    "evaluation": {"config", "data", "models", "metrics", "runtime"},
    "commands": {"config", "data", "models", "patching", "training", "metrics", "evaluation", "runtime", "kernels"},
    "cli": {"commands", "runtime"},
}
TOP_LEVEL = {"errors": "runtime", "cli": "cli", "__main__": "cli", "__init__": "cli"}


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name inside fastft, or None for anything outside it."""
    parts = module.split(".")
    if parts[0] != "fastft" or len(parts) == 1:
        return None
    return TOP_LEVEL.get(parts[1], parts[1])


def module_name(path: Path) -> str:
    if path.is_relative_to(KERNELS):
        parts = ["fastft", "kernels", *path.relative_to(KERNELS).with_suffix("").parts]
    else:
        parts = ["fastft", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, package: str) -> set[str]:
    """Every fastft module the code `source` of a module in `package` imports."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.add(node.module)
    return {module for module in found if layer_of(module)}


def import_edges() -> list[tuple[str, str, str]]:
    """(file, importing layer, imported layer) for every import that crosses layers."""
    files = [*PACKAGE.rglob("*.py"), *KERNELS.rglob("*.py")]
    edges = []
    for path in files:
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        source = layer_of(name)
        for module in imported_modules(path.read_text(encoding="utf-8"), package):
            target = layer_of(module)
            if target != source:
                edges.append((str(path.relative_to(PACKAGE.parent)), source, target))
    return edges


def test_every_package_is_a_known_layer():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()} | {"kernels"}
    modules = {TOP_LEVEL.get(p.stem) for p in PACKAGE.glob("*.py")}
    assert packages | modules <= set(MAY_IMPORT), packages - set(MAY_IMPORT)


def test_no_import_points_up_the_layers():
    upward = [f"{file}: {source} imports {target}" for file, source, target in import_edges()
              if target not in MAY_IMPORT[source]]
    assert upward == []


def test_no_two_packages_import_each_other_even_through_others():
    graph = {}
    for _, source, target in import_edges():
        graph.setdefault(source, set()).add(target)

    def reaches(start, goal, seen=()):
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, (*seen, nxt))) for nxt in graph.get(start, ()))

    assert [layer for layer in graph if reaches(layer, layer)] == []


def test_the_walk_sees_relative_absolute_and_function_level_imports():
    """The checker itself: code in fastft.models with each kind of import is read as importing those layers."""
    code = "from ..training import trainer\nimport fastft.commands.run\nimport torch\n\ndef f():\n    from ..cli import main\n"
    assert {layer_of(m) for m in imported_modules(code, "fastft.models")} == {"training", "commands", "cli"}
