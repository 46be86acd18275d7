"""The applications under projects/ stand alone (as detectron2's projects do): no module of one
project imports another project or reads another project's folder by name.  What two projects
share lives in the one shared helper folder, projects/nd_common/, which imports no project."""

import ast
import os

PROJECTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "projects")
SHARED = "nd_common"


def project_names() -> set[str]:
    """Every folder of projects/ holding Python code, and every module directly in it."""
    names = set()
    for entry in os.listdir(PROJECTS):
        path = os.path.join(PROJECTS, entry)
        if entry.endswith(".py"):
            names.add(entry[:-3])
        elif os.path.isdir(path) and any(
            f.endswith(".py") for _, _, files in os.walk(path) for f in files
        ):
            names.add(entry)
    return names


def foreign_references(source: str, own: str, depth: int, projects: set[str]) -> list[str]:
    """The projects other than ``own`` and the shared folder that ``source`` (a module ``depth``
    packages below projects/) imports, absolutely or relatively, or names as a string (a path
    component such as ``os.path.join("projects", "nd_demo")`` or an ``import_module`` name)."""
    others = projects - {own, SHARED}
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in others]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                target = (node.module or "").split(".")[0]
            elif node.level == depth + 1:  # from projects/ itself: ``from ..nd_demo import``
                target = (node.module or node.names[0].name).split(".")[0]
            elif node.level > depth + 1:
                found.append("." * node.level + (node.module or "") + " (outside projects/)")
                continue
            else:  # within its own project
                continue
            if target in others:
                found.append("." * node.level + (node.module or target))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            words = node.value.split(".")
            if " " not in node.value and words[0] in others:
                found.append(repr(node.value))
    return found


def test_the_checker_finds_every_kind_of_reference():
    projects = {"nd_demo", "nd_ablation", "nd_common"}
    source = "\n".join(
        [
            "import os, nd_demo.configs",
            "from nd_demo.trainer import train",
            "from ..nd_demo import jobs",
            "from ... import anything",
            "from nd_common.jobs import run_jobs",  # the shared folder: allowed
            "from . import plan",  # its own package: allowed
            "CONFIG = os.path.join('projects', 'nd_demo', 'configs')",
            "MODULE = 'nd_demo.cli'",
            '"""A docstring may speak of nd_demo."""',
        ]
    )
    assert sorted(foreign_references(source, "nd_ablation", 1, projects)) == sorted(
        [
            "nd_demo.configs",
            "nd_demo.trainer",
            "..nd_demo",
            "... (outside projects/)",
            "'nd_demo'",
            "'nd_demo.cli'",
        ]
    )


def test_no_project_imports_another():
    projects = project_names()
    assert {SHARED, "nd_demo", "nd_ablation", "nd_benchmark", "deploy_latency"} <= projects
    modules, offenders = 0, {}
    for root, _, files in os.walk(PROJECTS):
        relative = os.path.relpath(root, PROJECTS)
        parts = [] if relative == "." else relative.split(os.sep)
        for name in sorted(f for f in files if f.endswith(".py")):
            own = parts[0] if parts else name[:-3]
            with open(os.path.join(root, name), encoding="utf-8") as stream:
                found = foreign_references(stream.read(), own, len(parts), projects)
            modules += 1
            if found:
                offenders[os.path.join(relative, name)] = found
    assert modules >= 20
    assert offenders == {}
