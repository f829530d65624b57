"""nbgrader, end to end, on chapter 2's exercises with the Rust kernel.

A course is made from the solutions notebook (scripts/classroom.py nbgrader),
`nbgrader generate_assignment` strips the solutions (its students' copy must be
the chapter notebook's exercise section, cell for cell), and `nbgrader autograde`
grades three submissions: the solutions (full points), one wrong answer (zero on
that check, full on the other) and the untouched copy (zero).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import classroom  # noqa: E402

CHAPTER = "ch02_working_with_text"
BIN = Path(sys.executable).parent


def cells_by_id(nb):
    return {c["metadata"]["nbgrader"]["grade_id"]: c for c in nb["cells"] if "nbgrader" in c.get("metadata", {})}


def source(cell):
    return "".join(cell["source"])


class NbgraderTest(unittest.TestCase):
    def setUp(self):
        self.course = Path(tempfile.mkdtemp(prefix="llm-rs-course-"))
        self.addCleanup(shutil.rmtree, self.course, ignore_errors=True)
        self.env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")

    def nbgrader(self, *args):
        run = subprocess.run([str(BIN / "nbgrader"), *args], cwd=self.course, env=self.env,
                             capture_output=True, text=True, timeout=1800)
        self.assertEqual(run.returncode, 0, f"nbgrader {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}")
        return run

    def test_generate_and_autograde(self):
        self.assertEqual(classroom.nbgrader_course(self.course, [CHAPTER]), [CHAPTER])
        self.nbgrader("generate_assignment", CHAPTER, "--force")
        release = json.loads((self.course / "release" / CHAPTER / f"{CHAPTER}.ipynb").read_text())
        source_nb = json.loads((self.course / "source" / CHAPTER / f"{CHAPTER}.ipynb").read_text())

        # the students' copy nbgrader makes = the chapter notebook's exercises
        chapter = json.loads((ROOT / "notebooks" / f"{CHAPTER}.ipynb").read_text())
        ours = [source(c) for c in chapter["cells"] if "exercise" in c["metadata"].get("tags", [])]
        theirs = [source(c) for c in release["cells"] if "solutions-only" not in c["metadata"].get("tags", [])]
        self.assertEqual(theirs, ours, "nbgrader's release differs from the chapter's exercises: "
                                       "run scripts/exercises.py sync")
        for cell in release["cells"]:
            self.assertNotIn("BEGIN SOLUTION", source(cell))

        # three students
        answers = cells_by_id(source_nb)
        wrong = json.loads(json.dumps(release))
        for grade_id, cell in cells_by_id(wrong).items():
            if grade_id == "ex2_1_answer":  # one piece for the whole text: not what the exercise asks
                cell["source"] = source(cell).replace(
                    "// YOUR CODE HERE\n    todo!()", 'vec![gpt2.decode(&ex2_1_ids)?]')
                self.assertIn("vec![gpt2.decode", cell["source"])
            elif grade_id == "ex2_2_answer":
                cell["source"] = source(answers[grade_id])
        for student, nb in [("right", source_nb), ("one-wrong", wrong), ("untouched", release)]:
            path = self.course / "submitted" / student / CHAPTER / f"{CHAPTER}.ipynb"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(nb))
        self.nbgrader("autograde", CHAPTER, "--force")

        from nbgrader.api import Gradebook
        with Gradebook(f"sqlite:///{self.course / 'gradebook.db'}") as gb:
            def scores(student):
                sub = gb.find_submission_notebook(CHAPTER, CHAPTER, student)
                return {g.name: g.score for g in sub.grades}

            self.assertEqual(scores("right"), {"ex2_1_check": 1, "ex2_2_check": 1})
            self.assertEqual(scores("one-wrong"), {"ex2_1_check": 0, "ex2_2_check": 1})
            self.assertEqual(scores("untouched"), {"ex2_1_check": 0, "ex2_2_check": 0})


if __name__ == "__main__":
    unittest.main()
