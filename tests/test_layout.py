"""The repository's shape: commands at the root, YAML in configs/, imports that go one way, and the
reader's budgets (issue 22): thin commands, a training loop on the first screens, a README of a few
screens with the reference in docs/."""

import ast
import re

import pytest

from tests.helpers import REPO

PROJECT = {"model", "data", "runtime", "training", "bench", "train", "sample", "export", "plot", "tests", "configs"}


def project_imports(package: str) -> set[str]:
    """The top-level project names that the .py files of a folder import."""
    names = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return names & PROJECT


def test_the_root_holds_only_commands():
    assert sorted(p.name for p in REPO.glob("*.py")) == ["export.py", "look.py", "plot.py", "sample.py", "train.py"]


def test_configs_holds_yaml_only():
    files = [p for p in (REPO / "configs").rglob("*") if p.is_file()]
    assert files and all(p.suffix == ".yaml" for p in files), files


@pytest.mark.parametrize("package,allowed", [("model", {"model"}), ("runtime", {"runtime"}),
                                             ("data", {"data", "runtime"}),
                                             ("training", {"training", "model", "data", "runtime"})])
def test_imports_go_one_way(package, allowed):
    """model/ needs only torch; runtime/ (plumbing) and data/ never import a command or the model;
    training/ (what only train.py needs) builds on all three, never on a command."""
    assert project_imports(package) <= allowed


def functions(path) -> list[tuple[str, int, int]]:
    """(name, first line, length) of every function and method of a file."""
    tree = ast.parse(path.read_text())
    return [(n.name, n.lineno, n.end_lineno - n.lineno + 1) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


@pytest.mark.parametrize("command,budget", [("train.py", 450), ("sample.py", 250)])
def test_each_command_is_thin_and_no_function_in_it_is_long(command, budget):
    lines = (REPO / command).read_text().splitlines()
    assert len(lines) <= budget
    assert max(length for _, _, length in functions(REPO / command)) <= 60


def test_the_training_loop_is_on_the_first_screens_with_the_step_first():
    source = (REPO / "train.py").read_text()
    loop = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.While))
    assert loop.lineno <= 250
    step = ast.get_source_segment(source, loop).splitlines()[1:8]  # the loop's first lines: lr, forward/backward, step
    assert any("lr_at(" in line for line in step) and any("forward_backward(" in line for line in step)
    assert any("optimizer_step(" in line for line in step)


def test_the_readme_fits_a_few_screens_and_links_the_reference_in_docs():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    linked = set(re.findall(r"\(docs/([\w-]+\.md)", readme))
    assert len(linked) >= 3 and all((REPO / "docs" / page).is_file() for page in linked)


def test_every_relative_link_in_the_readme_and_docs_points_at_a_file():
    for page in [REPO / "README.md", *(REPO / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith(("http://", "https://", "mailto:")):
                assert (page.parent / target).exists(), f"{page.name} links {target}"
