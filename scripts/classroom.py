#!/usr/bin/env python3
"""Notebooks for a class: copies that work outside the repository.

The notebooks load the library with `:dep llm_core = { path = "../llm_core" }`,
a path relative to notebooks/. A copy in a student's home, or in nbgrader's
course directory, points that line at this checkout's llm_core instead (an
absolute path: every kernel then shares the same warm build template).

    python scripts/classroom.py copy DEST              # the chapter notebooks (with their exercises), figures
    python scripts/classroom.py nbgrader COURSE [NAME...]  # an nbgrader course: source/<chapter>/<chapter>.ipynb
                                                       # from the solutions notebooks, and nbgrader_config.py
"""
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
LLM_CORE = ROOT / "llm_core"
DEP = re.compile(r'(:dep\s+llm_core\s*=\s*\{\s*path\s*=\s*)"[^"]*"')


def point_dep(nb):
    """Point a notebook's `:dep llm_core` line (parsed JSON) at this checkout's llm_core."""
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            source = "".join(cell["source"])
            cell["source"] = DEP.sub(lambda m: m.group(1) + json.dumps(str(LLM_CORE)), source)
    return nb


def copy_notebook(src, dest):
    dest.parent.mkdir(parents=True, exist_ok=True)
    nb = point_dep(json.loads(src.read_text()))
    dest.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def copy_for_students(dest):
    """The chapter notebooks (exercises unanswered, no solutions) and their figures."""
    dest = Path(dest)
    for nb in sorted(NOTEBOOKS.glob("*.ipynb")):
        copy_notebook(nb, dest / nb.name)
    if (NOTEBOOKS / "figures").is_dir():
        shutil.copytree(NOTEBOOKS / "figures", dest / "figures", dirs_exist_ok=True)
    return dest


def nbgrader_course(course, names=()):
    """An nbgrader course directory: each solutions notebook as an assignment's source."""
    course = Path(course)
    course.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "nbgrader_config.py", course / "nbgrader_config.py")
    made = []
    for src in sorted((NOTEBOOKS / "solutions").glob("*_solutions.ipynb")):
        chapter = src.name[: -len("_solutions.ipynb")]
        if names and chapter not in names:
            continue
        copy_notebook(src, course / "source" / chapter / f"{chapter}.ipynb")
        made.append(chapter)
    return made


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "copy":
        print(f"notebooks copied to {copy_for_students(sys.argv[2])}")
    elif len(sys.argv) >= 3 and sys.argv[1] == "nbgrader":
        made = nbgrader_course(sys.argv[2], sys.argv[3:])
        print(f"{sys.argv[2]}: assignments {', '.join(made)}; next: cd {sys.argv[2]} && nbgrader generate_assignment NAME")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
