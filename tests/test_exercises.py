"""The exercises have one source: each chapter's exercise cells must be what
scripts/exercises.py makes from its solutions notebook, and every solutions
notebook must be a well-formed nbgrader source (answer regions, graded checks
with points, unique ids)."""
import json
import sys
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import exercises  # noqa: E402


class ExercisesTest(unittest.TestCase):
    def test_chapters_are_in_step_with_their_solutions(self):
        self.assertEqual(exercises.verify(), 0, "run `python scripts/exercises.py sync`")

    def test_solutions_are_nbgrader_sources(self):
        paths = sorted((ROOT / "notebooks" / "solutions").glob("*_solutions.ipynb"))
        self.assertTrue(paths)
        for path in paths:
            with self.subTest(notebook=path.name):
                nb = json.loads(path.read_text())
                graded = [c["metadata"]["nbgrader"] for c in nb["cells"] if "nbgrader" in c["metadata"]]
                ids = [g["grade_id"] for g in graded]
                self.assertEqual(len(ids), len(set(ids)), "grade_id used twice")
                checks = [g for g in graded if g["grade"]]
                answers = [c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("solution")]
                self.assertTrue(checks and answers)
                for g in checks:
                    self.assertTrue(g["locked"] and g["points"] > 0, g["grade_id"])
                for c in answers:
                    self.assertIn("BEGIN SOLUTION", "".join(c["source"]))
                self.assertEqual(nb["metadata"]["kernelspec"]["language"], "rust")


if __name__ == "__main__":
    unittest.main()
