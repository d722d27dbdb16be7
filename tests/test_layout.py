"""The repository's shape: commands at the root, YAML in configs/, and imports that go one way."""

import ast

import pytest

from tests.helpers import REPO

PROJECT = {"model", "data", "runtime", "bench", "train", "sample", "export", "plot", "tests", "configs"}


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
    assert sorted(p.name for p in REPO.glob("*.py")) == ["export.py", "plot.py", "sample.py", "train.py"]


def test_configs_holds_yaml_only():
    files = [p for p in (REPO / "configs").rglob("*") if p.is_file()]
    assert files and all(p.suffix == ".yaml" for p in files), files


@pytest.mark.parametrize("package,allowed", [("model", {"model"}), ("runtime", {"runtime"}),
                                             ("data", {"data", "runtime"})])
def test_imports_go_one_way(package, allowed):
    """model/ needs only torch; runtime/ (plumbing) and data/ never import a command or the model."""
    assert project_imports(package) <= allowed
