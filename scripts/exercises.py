#!/usr/bin/env python3
"""The book's exercises: one source, two notebooks.

The source of every chapter's exercises is its solutions notebook,
`notebooks/solutions/<chapter>_solutions.ipynb`, written in nbgrader's format:

- a markdown cell per exercise (nbgrader: locked),
- an answer cell (nbgrader: solution) whose answer sits between `// BEGIN SOLUTION`
  and `// END SOLUTION` lines,
- a check cell (nbgrader: grade, locked, with points) that panics until the answer is right.

Cells tagged `solutions-only` (the title, the `:dep` cell, set-up that the chapter
already did) stay in the solutions notebook. Every other cell is copied to the end
of the chapter notebook, with each solution region replaced by nbgrader's stub
(`// YOUR CODE HERE` + `todo!()`, see nbgrader_config.py), outputs cleared, tagged
`exercise`, and the answer and check cells also tagged `raises-exception` (the
smoke run expects them to fail there: an unanswered exercise fails visibly).

    python scripts/exercises.py sync [SOLUTIONS.ipynb ...]  # rewrite the chapters' exercise sections
    python scripts/exercises.py check   # exit 1 if any chapter is out of step (a test runs this)
"""
import copy
import json
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SOLUTIONS = NOTEBOOKS / "solutions"
SUFFIX = "_solutions.ipynb"


def load_stub():
    """nbgrader_config.py's Rust stub, so the chapters show what `generate_assignment` makes."""
    config = {}
    exec((ROOT / "nbgrader_config.py").read_text(), {"get_config": lambda: _Config(config)})
    return config["code_stub"]["rust"]


class _Config:
    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return _Section(self._store)


class _Section:
    def __init__(self, store):
        object.__setattr__(self, "_store", store)

    def __setattr__(self, name, value):
        self._store[name] = value


# --- building a solutions notebook (for authors: a short script calls these) ---
def _cell(kind, source, tags_=(), nbgrader=None):
    cell = nbformat.v4.new_markdown_cell(source) if kind == "md" else nbformat.v4.new_code_cell(source)
    if tags_:
        cell.metadata["tags"] = list(tags_)
    if nbgrader:
        cell.metadata["nbgrader"] = {"grade": False, "locked": False, "schema_version": 3,
                                     "solution": False, "task": False, **nbgrader}
    return cell


def only(kind, source):
    """A cell of the solutions notebook alone (its title, `:dep`, the chapter's set-up)."""
    return _cell(kind, source, ["solutions-only"])


def text(grade_id, source):
    """An exercise's statement (markdown, locked)."""
    return _cell("md", source, nbgrader={"grade_id": grade_id, "locked": True})


def code(grade_id, source):
    """Code both notebooks run (locked): set-up an exercise shares, a demonstration."""
    return _cell("code", source, nbgrader={"grade_id": grade_id, "locked": True})


def answer(grade_id, source):
    """The student's cell; the answer between `// BEGIN SOLUTION` and `// END SOLUTION` lines."""
    assert "BEGIN SOLUTION" in source and "END SOLUTION" in source, grade_id
    return _cell("code", source, nbgrader={"grade_id": grade_id, "solution": True})


def check(grade_id, source, points=1):
    """A graded check (locked): panics unless the answer is right."""
    return _cell("code", source, nbgrader={"grade_id": grade_id, "grade": True, "locked": True,
                                           "points": points})


def write(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata = {
        "kernelspec": {"display_name": "Rust (llm-from-scratch-rs)", "language": "rust", "name": "llm-rust"},
        "language_info": {"codemirror_mode": "rust", "file_extension": ".rs", "mimetype": "text/rust",
                          "name": "Rust", "pygment_lexer": "rust", "version": ""},
    }
    nbformat.write(nb, path)


def chapter_of(solutions_path):
    return NOTEBOOKS / (solutions_path.name[: -len(SUFFIX)] + ".ipynb")


def tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def student_cell(cell, stub):
    """The chapter's copy of one solutions cell: solution regions replaced, no outputs."""
    new = copy.deepcopy(cell)
    meta = new.setdefault("metadata", {})
    meta.pop("execution", None)
    grader = meta.get("nbgrader", {})
    if new.cell_type == "code":
        new.outputs = []
        new.execution_count = None
        lines, out, inside = new.source.split("\n"), [], False
        for line in lines:
            if "BEGIN SOLUTION" in line:
                indent = line[: len(line) - len(line.lstrip())]
                out += [indent + s for s in stub.split("\n")]
                inside = True
            elif "END SOLUTION" in line:
                inside = False
            elif not inside:
                out.append(line)
        if inside:
            raise SystemExit(f"a BEGIN SOLUTION without END SOLUTION in cell:\n{cell.source}")
        new.source = "\n".join(out)
    extra = ["exercise"]
    if grader.get("solution") or grader.get("grade"):
        extra.append("raises-exception")
    meta["tags"] = [t for t in tags(new) if t not in extra] + extra
    return new


def expected_section(solutions_path, stub):
    nb = nbformat.read(solutions_path, as_version=4)
    return [student_cell(c, stub) for c in nb.cells if "solutions-only" not in tags(c)]


def comparable(cell):
    meta = {k: v for k, v in cell.get("metadata", {}).items() if k != "execution"}
    return json.dumps({"type": cell.cell_type, "source": cell.source, "metadata": meta}, sort_keys=True)


def pairs(only=()):
    for path in sorted(SOLUTIONS.glob("*" + SUFFIX)):
        if only and path.resolve() not in only:
            continue
        chapter = chapter_of(path)
        if not chapter.exists():
            raise SystemExit(f"{path.relative_to(ROOT)}: no chapter notebook {chapter.relative_to(ROOT)}")
        yield path, chapter


def sync(only=()):
    stub = load_stub()
    for path, chapter in pairs(only):
        nb = nbformat.read(chapter, as_version=4)
        kept = [c for c in nb.cells if "exercise" not in tags(c)]
        old = [c for c in nb.cells if "exercise" in tags(c)]
        new = expected_section(path, stub)
        # keep the outputs of cells that did not change (a full run's)
        by_key = {comparable(c): c for c in old}
        nb.cells = kept + [by_key.get(comparable(c), c) for c in new]
        nbformat.write(nb, chapter)
        print(f"{chapter.relative_to(ROOT)}: {len(new)} exercise cells from {path.relative_to(ROOT)}")


def verify():
    stub = load_stub()
    bad = 0
    for path, chapter in pairs():
        nb = nbformat.read(chapter, as_version=4)
        have = [comparable(c) for c in nb.cells if "exercise" in tags(c)]
        want = [comparable(c) for c in expected_section(path, stub)]
        if have != want:
            bad += 1
            print(f"{chapter.relative_to(ROOT)}: its exercises differ from {path.relative_to(ROOT)}; "
                  f"run `python scripts/exercises.py sync`")
    return 1 if bad else 0


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "sync":
        sync({Path(p).resolve() for p in sys.argv[2:]})
    elif cmd == "check":
        sys.exit(verify())
    else:
        sys.exit(__doc__)
