"""environment.yml is the one list of Python pins: check that the set-up
script has no pins of its own, that the venv holds exactly the pinned
versions, and that the torch pin is the one tch needs."""
import importlib.metadata
import pathlib
import re
import sys
import unittest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import pins  # noqa: E402

# tch release -> the libtorch (PyTorch) version it binds
TCH_TO_TORCH = {"0.26.0": "2.13.0"}


class EnvironmentPins(unittest.TestCase):
    def setUp(self):
        self.python, self.pins = pins.read()
        self.pin_map = {name.lower(): version for name, version in self.pins}

    def test_every_pip_entry_is_pinned_and_unique(self):
        self.assertGreater(len(self.pins), 5)
        names = [n.lower() for n, _ in self.pins]
        self.assertEqual(len(names), len(set(names)), "a package is pinned twice")
        for required in ["jupyterlab", "nbclient", "nbconvert", "ipykernel", "torch"]:
            self.assertIn(required, self.pin_map)

    def test_setup_script_has_no_pins_of_its_own(self):
        for script in ["setup.sh", "env.sh", "test.sh"]:
            text = (ROOT / "scripts" / script).read_text()
            self.assertIsNone(re.search(r"[A-Za-z0-9_-]==[0-9]", text), f"{script} pins a version itself")
        self.assertIn("scripts/pins.py", (ROOT / "scripts" / "setup.sh").read_text())

    def test_venv_has_exactly_the_pinned_versions(self):
        if not sys.prefix.endswith(".venv") and "LLM_RS_VENV" not in __import__("os").environ:
            self.skipTest("not running in the project venv")
        for name, version in self.pins:
            with self.subTest(package=name):
                self.assertEqual(importlib.metadata.version(name), version)
        py = f"{sys.version_info.major}.{sys.version_info.minor}"
        if py != self.python:
            print(f"\nnote: venv python is {py}, environment.yml pins {self.python} (any 3.10+ works)")

    def test_bench_pins_are_pinned_and_kept_out_of_the_venv(self):
        bench = pins.read_bench()
        names = [n.lower() for n, _, _ in bench]
        self.assertIn("llms-from-scratch", names)
        self.assertIn("transformers", names)
        self.assertEqual(len(names), len(set(names)), "a bench package is pinned twice")
        for name in names:
            self.assertNotIn(name, self.pin_map, f"{name} is both a bench pin and an environment pin")

    def test_torch_pin_matches_tch(self):
        cargo = (ROOT / "llm_core" / "Cargo.toml").read_text()
        m = re.search(r'^tch\s*=\s*"=([0-9.]+)"', cargo, re.M)
        self.assertIsNotNone(m, "tch must be pinned exactly (tch = \"=X.Y.Z\")")
        self.assertEqual(TCH_TO_TORCH[m.group(1)], self.pin_map["torch"])


if __name__ == "__main__":
    unittest.main()
