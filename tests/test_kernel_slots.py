"""scripts/llm-kernel's build slots, with a stand-in for evcxr (no compiling).

A new slot is a copy of the warm template (big build outputs hard-linked, what
cargo rewrites copied, the template's incremental caches and cell libraries
left out); two kernels never share a slot; a slot whose kernel died (even by
SIGKILL) is reused as it is; free slots idle for too long are removed.
"""
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAKE_EVCXR = """#!/bin/sh
echo "$EVCXR_TMPDIR" > "$1"
exec sleep 600
"""


class KernelSlotsTest(unittest.TestCase):
    def setUp(self):
        self.cache = Path(tempfile.mkdtemp(prefix="llm-rs-slots-"))
        self.addCleanup(subprocess.run, ["rm", "-rf", str(self.cache)])
        fake = self.cache / "fake_evcxr"
        fake.write_text(FAKE_EVCXR)
        fake.chmod(0o755)
        t = self.cache / "evcxr-slots" / "template"
        files = {
            "Cargo.toml": b"[package]\n",
            "target/x/debug/deps/libtch-1.rlib": b"r" * 300_000,
            "target/x/debug/deps/libtch-1.d": b"d" * 300_000,
            "target/x/debug/.fingerprint/tch-1/lib-tch": b"f" * 300_000,
            "target/x/debug/deps/small.rmeta": b"m",
            "target/x/debug/incremental/llm_core-1/s/a.o": b"i",
            "target/x/debug/libcode_3.so": b"c",
        }
        for rel, data in files.items():
            (t / rel).parent.mkdir(parents=True, exist_ok=True)
            (t / rel).write_bytes(data)
        (t / ".ready").write_text("key\n")
        self.template = t
        self.env = dict(os.environ, LLM_RS_CACHE=str(self.cache), EVCXR_JUPYTER=str(fake))
        self.env.pop("LLM_RS_TEMPLATE", None)
        self.kernels = []
        self.addCleanup(self.stop_all)

    def stop_all(self):
        for p in self.kernels:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stderr.close()

    def start(self):
        """Start a kernel; its slot."""
        out = self.cache / f"slot-{len(self.kernels)}"
        p = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "llm-kernel"), str(out)], env=self.env,
                             stderr=subprocess.PIPE)
        self.kernels.append(p)
        deadline = time.time() + 30
        while not (out.exists() and out.read_text().strip()):
            self.assertIsNone(p.poll(), p.stderr.read().decode() if p.poll() is not None else "")
            self.assertLess(time.time(), deadline)
            time.sleep(0.05)
        return p, Path(out.read_text().strip())

    def test_copy_reuse_and_cleanup(self):
        a, slot_a = self.start()
        b, slot_b = self.start()
        self.assertEqual((slot_a.name, slot_b.name), ("0", "1"))
        deps = "target/x/debug/deps"
        same = lambda rel: (slot_a / rel).stat().st_ino == (self.template / rel).stat().st_ino  # noqa: E731
        self.assertTrue(same(f"{deps}/libtch-1.rlib"), "a big build output is a hard link")
        self.assertFalse(same(f"{deps}/libtch-1.d"), "dep-info is rewritten in place: a copy")
        self.assertFalse(same("target/x/debug/.fingerprint/tch-1/lib-tch"), "fingerprints: a copy")
        self.assertFalse(same(f"{deps}/small.rmeta"), "small files: a copy")
        self.assertTrue((slot_a / "Cargo.toml").exists())
        self.assertFalse((slot_a / "target/x/debug/incremental").exists())
        self.assertFalse((slot_a / "target/x/debug/libcode_3.so").exists())
        self.assertFalse((slot_a / ".ready").exists())

        # a kernel killed outright frees its slot, which the next kernel reuses as it is
        (slot_a / "mine").write_text("a's work")
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
        c, slot_c = self.start()
        self.assertEqual(slot_c, slot_a)
        self.assertTrue((slot_c / "mine").exists(), "a warm slot is reused, not copied again")

        # a free slot idle for longer than LLM_RS_SLOT_DAYS is removed
        b.kill()
        b.wait()
        (slot_b / "mine").write_text("b's work")
        old = time.time() - 10 * 86400
        os.utime(self.cache / "evcxr-slots" / "1.lock", (old, old))
        self.env["LLM_RS_SLOT_DAYS"] = "7"
        d, slot_d = self.start()
        self.assertEqual(slot_d.name, "1")
        self.assertFalse((slot_d / "mine").exists(), "the idle slot was removed, then copied afresh")
        self.assertTrue((slot_d / deps / "libtch-1.rlib").exists())


if __name__ == "__main__":
    unittest.main()
