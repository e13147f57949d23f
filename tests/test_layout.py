"""The package's folders are its architecture: core → nn → conversion → analysis / io → experiment.

A module may import snnjax modules from its own folder and from folders below it, never above:
`snnjax.core` imports nothing of snnjax, `snnjax.conversion` nothing of analysis, io or experiment, and
analysis and io (side by side) not each other. Imports inside functions count too.
"""

import ast
import importlib
import pathlib
import re

import pytest

SNNJAX = pathlib.Path(__file__).parents[1] / "snnjax"
# Folder → level; a module may import from its own level or lower (analysis and io share a level but
# may not import each other). The top level (snnjax/__init__.py, the namespace snnjax.nnx and the two
# commands) and the packaged configs sit above everything.
LEVELS = {"core": 0, "nn": 1, "conversion": 2, "analysis": 3, "io": 3, "experiment": 4}
TOP = 5


def _folder(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "snnjax" and parts[1] in LEVELS else None


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    """Every snnjax module a file imports: ``(line, dotted name)``, ``from snnjax import x`` as snnjax.x."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("snnjax")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("snnjax"):
            if node.module == "snnjax":
                found += [(node.lineno, f"snnjax.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def _module_files():
    return sorted(p for p in SNNJAX.rglob("*.py") if "__pycache__" not in p.parts)


def _violations(files, package: pathlib.Path = SNNJAX) -> list[str]:
    bad = []
    for path in files:
        rel = path.relative_to(package.parent)
        own = _folder(".".join(rel.with_suffix("").parts))
        own_level = LEVELS[own] if own else TOP
        for line, name in _imports(ast.parse(path.read_text())):
            target = _folder(name)
            if target is None:
                if own is not None and name != "snnjax.configs" and not name.startswith("snnjax.configs."):
                    bad.append(f"{rel}:{line} imports {name} (the top level) from snnjax.{own}")
                continue
            if LEVELS[target] > own_level or (
                own != target and own_level == LEVELS[target] and own_level == LEVELS["io"]
            ):
                bad.append(f"{rel}:{line} (snnjax.{own or '<top>'}) imports {name}")
    return bad


def test_folders_import_only_downwards():
    files = _module_files()
    assert len(files) > 30, files  # the walk found the package
    assert _violations(files) == []


def test_the_check_sees_an_upward_import(tmp_path):
    """The test can fail: a core module importing the conversion layer, even inside a function."""
    bad_file = tmp_path / "snnjax" / "core" / "activations.py"
    bad_file.parent.mkdir(parents=True)
    bad_file.write_text("import jax\n\n\ndef _late():\n    from snnjax.conversion import simulation\n")
    assert _violations([bad_file], tmp_path / "snnjax") == [
        "snnjax/core/activations.py:5 (snnjax.core) imports snnjax.conversion"
    ]
    sibling = tmp_path / "snnjax" / "io" / "nir.py"
    sibling.parent.mkdir()
    sibling.write_text("from snnjax.analysis import reports\n")
    assert _violations([sibling], tmp_path / "snnjax") == [
        "snnjax/io/nir.py:1 (snnjax.io) imports snnjax.analysis"
    ]


@pytest.mark.parametrize("folder", sorted(LEVELS))
def test_every_folder_is_a_documented_package(folder):
    init = SNNJAX / folder / "__init__.py"
    assert init.exists(), f"snnjax/{folder} has no __init__.py"
    assert ast.get_docstring(ast.parse(init.read_text())), f"snnjax/{folder}/__init__.py has no docstring"


def test_every_module_has_its_tests_listed():
    """tests/README.md maps each module to its test files; a new module or a renamed test file fails here."""
    table = (pathlib.Path(__file__).parent / "README.md").read_text()
    listed = {}
    for line in table.splitlines():
        if line.startswith("| `snnjax"):
            modules_cell, files_cell = line.split("|")[1:3]
            files = re.findall(r"`(test_\w+\.py)`", files_cell)
            for module in re.findall(r"`(snnjax[\w.]*)`", modules_cell):
                listed[module] = files
    modules = {
        ".".join(p.relative_to(SNNJAX.parent).with_suffix("").parts)
        for p in _module_files()
        if p.name != "__init__.py"
    }
    assert sorted(modules - set(listed)) == []
    missing = {
        f for files in listed.values() for f in files if not (pathlib.Path(__file__).parent / f).exists()
    }
    assert sorted(missing) == []
    assert all(listed.values())


def test_renamed_public_names_warn_and_resolve():
    import snnjax
    import snnjax.io

    renamed = [
        (snnjax, "ann_to_snn_variables", "convert_variables"),
        (snnjax, "load_exported", "import_snn"),
        (snnjax, "from_torch_state_dict", "import_torch_state_dict"),
        (snnjax.conversion, "ann_to_snn_variables", "convert_variables"),
    ]
    for module, old, new in renamed:
        with pytest.warns(DeprecationWarning, match=f"{module.__name__}.{old} is deprecated.*{new}"):
            assert getattr(module, old) is getattr(module, new)
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        snnjax.no_such_name  # noqa: B018


def test_the_top_level_says_where_to_start():
    import snnjax

    assert "Where to start" in snnjax.__doc__ and "snnjax.core" in snnjax.__doc__
    assert all(hasattr(snnjax, name) for name in snnjax.__all__)
    for package in ("core", "nn", "conversion", "analysis", "io"):
        module = importlib.import_module(f"snnjax.{package}")
        assert all(hasattr(module, name) for name in module.__all__), package
