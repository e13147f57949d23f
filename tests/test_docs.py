"""The documentation: API coverage, docstrings that render, the tutorial and the examples run.

* Every module of the package is on an API page (a `::: module` directive in docs/api/*.md), and every
  function and class in a module's ``__all__`` has a docstring of its own (an undocumented one would be
  left off the page: mkdocs.yml sets ``show_if_no_docstring: false``).
* No docstring holds reST markup that mkdocstrings prints raw (Sphinx roles such as ``:func:`x```,
  ``::`` literal blocks, ``.. note::`` directives), read from the sources with ``ast`` (no site
  build needed); where a built site/ is present (scripts/docs.sh builds it before the tests in CI)
  its HTML is scanned for the same, and every documented name must have its anchor there.
* docs/tutorial.py and every script in examples/ run, and the tutorial's claims hold.

Each checker is a function that returns what it found, and each is also fed a fake module, docstring or
page to show that it can fail.
"""

import ast
import importlib
import importlib.util
import inspect
import os
import pathlib
import re
import runpy
import subprocess
import sys
import types

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).parents[1]
PACKAGE = ROOT / "snnjax"
API_PAGES = ROOT / "docs" / "api"
SITE = ROOT / "site"
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))

# reST that Markdown renders as literal text: Sphinx cross-reference roles, a paragraph ending in the
# literal-block marker `::`, and directives (`.. note::`). snnjax's docstrings write `name` instead
# (mkdocstrings links it when it names an object), fenced or indented code, and Google sections.
ROLES = ("func", "class", "mod", "data", "meth", "attr", "exc", "obj", "const")
REST_PATTERNS = {
    "reST role": re.compile(r":(?:py:)?(?:" + "|".join(ROLES) + r"):`"),
    "reST literal-block marker '::'": re.compile(r"\S::[ \t]*$", re.MULTILINE),
    "reST directive": re.compile(r"^[ \t]*\.\. [\w-]+::", re.MULTILINE),
}
# The same in built HTML, where backticks have become <code> elements.
HTML_PATTERNS = {
    "reST role": re.compile(r":(?:py:)?(?:" + "|".join(ROLES) + r"):(?:<code|`)"),
    "reST literal-block marker '::'": re.compile(r"\S::\s*</p>"),
    "reST directive": re.compile(r"(?:^|>)\s*\.\. [\w-]+::", re.MULTILINE),
}


# --- The checkers. ---


def package_modules(package: pathlib.Path = PACKAGE) -> list[str]:
    """Every public module of the package: each .py file except ``__init__`` and private ``_x`` ones."""
    modules = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if path.name != "__init__.py" and not any(part.startswith("_") for part in parts):
            modules.append(".".join(parts))
    return modules


def documented_modules(pages: pathlib.Path = API_PAGES) -> set[str]:
    """The objects named by a mkdocstrings directive (``::: snnjax.core.neurons``) on the API pages."""
    return {
        match[1]
        for page in pages.glob("*.md")
        for match in re.finditer(r"^:::[ \t]+([\w.]+)", page.read_text(), re.MULTILINE)
    }


def own_docstring(obj) -> str:
    """``obj``'s own docstring, "" without one (not a parent class's, nor a dataclass's generated one)."""
    doc = (obj.__doc__ or "").strip()  # a class's __doc__ is its own: None when it has none
    generated = inspect.isclass(obj) and doc.startswith(f"{obj.__name__}(")  # dataclass, NamedTuple
    return "" if generated else doc


def undocumented_names(module: types.ModuleType) -> list[str]:
    """The functions and classes in ``module.__all__`` without a docstring of their own."""
    missing = []
    for name in getattr(module, "__all__", ()):
        obj = getattr(module, name)
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and not own_docstring(obj):
            missing.append(name)
    return missing


def docstrings(source: str) -> list[tuple[int, str]]:
    """``(first line, text)`` of the module's docstring and of every class's and function's, nested too."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body[0] if node.body else None
            if (
                isinstance(body, ast.Expr)
                and isinstance(body.value, ast.Constant)
                and isinstance(body.value.value, str)
            ):
                found.append((body.lineno, body.value.value))
    return found


def rest_markup(source: str, filename: str) -> list[str]:
    """``"file:line: what"`` for each piece of reST markup in the docstrings of ``source``."""
    problems = []
    for first_line, text in docstrings(source):
        for what, pattern in REST_PATTERNS.items():
            for match in pattern.finditer(text):
                line = first_line + text.count("\n", 0, match.start())
                problems.append(f"{filename}:{line}: {what} {match.group().strip()!r}")
    return problems


def site_problems(site: pathlib.Path) -> list[str]:
    """``"page: what"`` for each piece of raw reST markup on the built site's HTML pages."""
    problems = []
    for page in sorted(site.rglob("*.html")):
        html = page.read_text(errors="replace")
        for what, pattern in HTML_PATTERNS.items():
            for match in pattern.finditer(html):
                context = html[max(0, match.start() - 60) : match.end() + 20].replace("\n", " ")
                problems.append(f"{page.relative_to(site)}: {what} in ...{context}...")
    return problems


def missing_anchors(site: pathlib.Path, modules: dict[str, types.ModuleType]) -> list[str]:
    """The functions and classes of each module's ``__all__`` that have no anchor on the built API pages.

    A name is looked for where it is defined (``snnjax.nn.nnx_layers.Activation``), so a namespace
    that re-exports it (``snnjax.nnx``) may show its docstring alone.
    """
    anchors = set()
    for page in (site / "api").rglob("*.html"):
        anchors.update(re.findall(r'id="(snnjax[\w.]*)"', page.read_text(errors="replace")))
    missing = []
    for module_name, module in modules.items():
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            defined_here = getattr(obj, "__module__", None) == module_name
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and defined_here:
                if f"{module_name}.{name}" not in anchors:
                    missing.append(f"{module_name}.{name}")
    return missing


def site_is_current(site: pathlib.Path) -> bool:
    """Whether site/ was built after the last change to what it is built from."""
    built = site / "index.html"
    if not built.exists():
        return False
    sources = [ROOT / "mkdocs.yml", ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    for folder in ("docs", "snnjax", "configs", "examples"):
        sources.extend((ROOT / folder).rglob("*.py"))
    return max(p.stat().st_mtime for p in sources) <= built.stat().st_mtime


# --- API coverage. ---


def test_every_module_is_on_an_api_page():
    missing = sorted(set(package_modules()) - documented_modules())
    assert not missing, f"modules on no page of docs/api/ (add a '::: module' directive): {missing}"
    assert "snnjax.nnx" in package_modules()


def test_every_public_function_and_class_has_a_docstring():
    missing = {
        name: undocumented
        for name in package_modules()
        if (undocumented := undocumented_names(importlib.import_module(name)))
    }
    assert not missing, f"names in __all__ without a docstring (they are left off the API pages): {missing}"


def undocumented_reexports(package: types.ModuleType, documented: set[str]) -> list[str]:
    """The functions and classes ``package`` re-exports that are not in a documented module's ``__all__``."""
    missing = []
    for name, obj in vars(package).items():
        if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        home = sys.modules.get(obj.__module__)
        if obj.__module__ not in documented or obj.__name__ not in getattr(home, "__all__", ()):
            missing.append(f"{package.__name__}.{name} (defined in {obj.__module__})")
    return missing


def test_every_name_the_packages_reexport_is_documented_where_it_is_defined():
    documented = documented_modules()
    packages = ["snnjax"] + [f"snnjax.{p.parent.name}" for p in sorted(PACKAGE.glob("*/__init__.py"))]
    missing = [
        problem
        for package in packages
        for problem in undocumented_reexports(importlib.import_module(package), documented)
    ]
    assert not missing, f"re-exported names whose defining module does not document them: {missing}"


def test_the_coverage_checks_catch_an_undocumented_module_and_name(tmp_path):
    package = tmp_path / "snnjax"
    (package / "core").mkdir(parents=True)
    for name in ("__init__.py", "core/__init__.py", "core/new.py", "core/_private.py", "nnx.py"):
        (package / name).write_text('"""A module."""\n')
    (tmp_path / "core.md").write_text("# core\n\n::: snnjax.nnx\n    options:\n      heading_level: 3\n")
    assert package_modules(package) == ["snnjax.core.new", "snnjax.nnx"]
    assert set(package_modules(package)) - documented_modules(tmp_path) == {"snnjax.core.new"}

    fake = types.ModuleType("fake")

    def documented():
        """Has a docstring."""

    def undocumented():
        pass

    class Undocumented(ValueError):  # a parent's docstring is not its own
        pass

    fake.documented, fake.undocumented, fake.Undocumented, fake.CONSTANT = (
        documented,
        undocumented,
        Undocumented,
        3,
    )
    fake.__all__ = ["CONSTANT", "Undocumented", "documented", "undocumented"]
    assert undocumented_names(fake) == ["Undocumented", "undocumented"]

    # A package re-exporting `documented` from its documented home, but also `undocumented` from a
    # module that is not on a page and `Undocumented` under a name its home's __all__ lacks.
    for function in (documented, undocumented):
        function.__module__ = "fake"
    Undocumented.__module__ = "fake"
    fake.__all__ = ["documented", "undocumented"]
    package = types.ModuleType("fake_package")
    package.documented, package.undocumented, package.Undocumented = documented, undocumented, Undocumented
    sys.modules["fake"] = fake
    try:
        assert undocumented_reexports(package, {"fake"}) == ["fake_package.Undocumented (defined in fake)"]
        assert len(undocumented_reexports(package, set())) == 3
    finally:
        del sys.modules["fake"]


# --- Docstrings that render. ---


def test_no_docstring_holds_rest_markup():
    problems = [
        problem
        for path in sorted(PACKAGE.rglob("*.py"))
        for problem in rest_markup(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert not problems, (
        "reST markup that the docs print raw (write `name` for a reference, a fenced code block, a "
        "Google section):\n" + "\n".join(problems)
    )


def test_the_rest_check_names_module_and_line():
    source = '''"""A module.

Usage::

    run()
"""


class Thing:
    """A class.

    Uses :func:`helper` and :py:class:`Other`.
    """

    def method(self):
        """A method.

        .. note:: raw
        """


def fine():
    """Refers to `helper` and `Other`; a ``C++::`` in code is not a marker; a dict {a: b}."""
'''
    assert rest_markup(source, "fake.py") == [
        "fake.py:3: reST literal-block marker '::' 'e::'",
        "fake.py:12: reST role ':func:`'",
        "fake.py:12: reST role ':py:class:`'",
        "fake.py:18: reST directive '.. note::'",
    ]


def test_the_built_site_has_no_raw_rest_and_every_documented_name():
    if not site_is_current(SITE):
        pytest.skip("no current site/: bash scripts/docs.sh builds it (CI runs it before the tests)")
    problems = site_problems(SITE)
    assert not problems, "raw reST on the built pages:\n" + "\n".join(problems)
    modules = {name: importlib.import_module(name) for name in package_modules()}
    missing = missing_anchors(SITE, modules)
    assert not missing, f"documented names that are not on the built API pages: {missing}"


def test_the_site_checks_catch_raw_rest_and_a_missing_name(tmp_path):
    (tmp_path / "api" / "core").mkdir(parents=True)
    (tmp_path / "api" / "core" / "index.html").write_text(
        '<h2 id="snnjax.core.neurons.if_neuron">if_neuron</h2>\n'
        "<p>See :func:<code>if_step</code> and <code>fine</code>.</p>\n<p>Usage::</p>\n"
    )
    (tmp_path / "index.html").write_text("<p>.. warning:: raw</p>\n<p>a list: [a::b]</p>\n")
    problems = site_problems(tmp_path)
    assert [p.split(" in ")[0] for p in problems] == [
        "api/core/index.html: reST role",
        "api/core/index.html: reST literal-block marker '::'",
        "index.html: reST directive",
    ]
    neurons = types.ModuleType("snnjax.core.neurons")
    neurons.if_neuron, neurons.if_step = (lambda: None), (lambda: None)
    neurons.if_neuron.__module__ = neurons.if_step.__module__ = "snnjax.core.neurons"
    neurons.__all__ = ["if_neuron", "if_step"]
    namespace = types.ModuleType("snnjax.neurons")  # re-exports them: looked for where they are defined
    namespace.if_neuron, namespace.if_step = neurons.if_neuron, neurons.if_step
    namespace.__all__ = ["if_step"]
    missing = missing_anchors(tmp_path, {"snnjax.core.neurons": neurons, "snnjax.neurons": namespace})
    assert missing == ["snnjax.core.neurons.if_step"]


# --- The tutorial and the examples. ---


@pytest.fixture(scope="module")
def tutorial():
    """docs/tutorial.py run in this process (strict: CPU, 4 fake devices, warnings are errors)."""
    return runpy.run_path(str(ROOT / "docs" / "tutorial.py"), run_name="tutorial")


@pytest.mark.slow
def test_tutorial_claims_hold(tutorial):
    ann_accuracy, snn_accuracy = tutorial["ann_accuracy"], tutorial["snn_accuracy"]
    assert ann_accuracy > 0.9, "the QCFS CNN should learn the digits in its few seconds of training"
    assert set(snn_accuracy) == {1, 2, 4, 8, 16, 32}
    for t in (4, 8, 16, 32):  # "within a few images of the ANN from t = L = 4 on" (1 image = 0.28 %)
        assert abs(snn_accuracy[t] - ann_accuracy) <= 0.02, (t, snn_accuracy[t], ann_accuracy)
    first, second = tutorial["report"]["layers"]
    # The first layer's input is the image at every step: at t = L its IF count is exactly QCFS's.
    assert first["errors"]["4"]["relative_l2"] < 1e-4
    assert 0.0 < first["mean_rate"] < 1.0 and 0.0 < second["mean_rate"] < 1.0
    assert second["errors"]["32"]["cosine"] > 0.9
    assert list(tutorial["ann_sites"]) == [first["name"], second["name"]]
    # The exported artefact gives the in-process SNN's logits.
    assert tutorial["exported_logits"].shape == (8, 360, 10)
    np.testing.assert_allclose(tutorial["exported_logits"], tutorial["in_process_logits"], rtol=0, atol=1e-6)


def test_the_tutorial_page_renders_the_script_cells():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    script = '"""Header."""\n\n# %% [markdown]\n# # Title\n#\n# Prose.\n\n# %%\nx = 1\n\n# %% title\ny = 2\n'
    assert hooks.render_script(script) == (
        "# Title\n\nProse.\n\n```python\nx = 1\n```\n\n```python\ny = 2\n```\n"
    )
    page = (ROOT / "docs" / "tutorial.md").read_text()
    assert "<!-- script: docs/tutorial.py -->" in page


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(example):
    assert inspect.cleandoc(ast.get_docstring(ast.parse(example.read_text())) or ""), "say what it shows"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}  # one CPU device, as a user runs it
    # A deprecated snnjax name used by the example itself is an error (the warning names the caller).
    command = [sys.executable, "-W", "error::DeprecationWarning:__main__", str(example)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{example.name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"


def test_the_examples_page_lists_every_example():
    page = (ROOT / "docs" / "examples.md").read_text()
    assert EXAMPLES, "examples/ holds no example"
    for example in EXAMPLES:
        assert f'--8<-- "examples/{example.name}"' in page, (
            f"docs/examples.md does not include {example.name}"
        )
