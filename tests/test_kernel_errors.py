"""Errors that look like errors: a panic or a `?` on an `Err` ends its cell in
an `error` output and an error execute_reply (scripts/evcxr/*.patch), so
Run All stops at that cell, while the variables of the cells before it stay.

Runs the project's kernel (`llm-rust`) headless through nbclient, as the
notebook harness does.
"""
import os
import unittest

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

KERNEL = os.environ.get("LLM_KERNEL_NAME", "llm-rust")


def setUpModule():
    # the kernel inherits the environment: no backtraces unless a test asks
    os.environ.pop("RUST_BACKTRACE", None)


def notebook(*sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


def errors(cell):
    return [o for o in cell.outputs if o.output_type == "error"]


def streams(cell):
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


class KernelErrors(unittest.TestCase):
    def test_run_all_stops_at_a_panic(self):
        nb = notebook(
            "let a = 5;\nlet v: Vec<i64> = vec![1, 2];",
            'println!("before the panic");\nlet i = 3;\nlet x = v[i];',
            "let never = a + 1;",
        )
        client = NotebookClient(nb, kernel_name=KERNEL, timeout=600)
        with self.assertRaises(CellExecutionError):
            client.execute()
        panic = errors(nb.cells[1])
        self.assertEqual(len(panic), 1, nb.cells[1].outputs)
        self.assertIn("index out of bounds: the len is 2 but the index is 3", panic[0]["evalue"])
        self.assertIn("before the panic", streams(nb.cells[1]))
        self.assertNotIn("stack backtrace", streams(nb.cells[1]))
        self.assertEqual(nb.cells[2].outputs, [], "Run All went past the failing cell")
        self.assertIsNone(nb.cells[2].execution_count)

    def test_errors_keep_earlier_variables(self):
        nb = notebook(
            "let a = 5;",
            "let b: i64 = \"seven\".parse()?;",
            "let v: Vec<i64> = Vec::new();\nlet y = v[0];",
            'println!("a = {a}");',
        )
        client = NotebookClient(nb, kernel_name=KERNEL, timeout=600)
        with client.setup_kernel():
            client.execute_cell(nb.cells[0], 0)
            for index in (1, 2):
                with self.assertRaises(CellExecutionError):
                    client.execute_cell(nb.cells[index], index)
            client.execute_cell(nb.cells[3], 3)
        question_mark = errors(nb.cells[1])
        self.assertEqual(len(question_mark), 1, nb.cells[1].outputs)
        self.assertEqual(question_mark[0]["evalue"], "invalid digit found in string")
        self.assertEqual(len(errors(nb.cells[2])), 1, nb.cells[2].outputs)
        self.assertEqual(streams(nb.cells[3]).strip(), "a = 5")

    def test_a_libtorch_error_shows_its_message_not_its_cpp_frames(self):
        nb = notebook(
            ':dep llm_core = { path = "../llm_core" }',
            "use llm_core::tch::{Device, Kind, Tensor};\n"
            "let w = Tensor::ones([3, 4], (Kind::Float, Device::Cpu));\n"
            "let x = Tensor::ones([5, 2], (Kind::Float, Device::Cpu));",
            "let y = w.matmul(&x);",
            'println!("{:?}", w.size());',
        )
        client = NotebookClient(
            nb, kernel_name=KERNEL, timeout=1800,
            resources={"metadata": {"path": os.path.join(os.path.dirname(__file__), "..", "notebooks")}},
        )
        with client.setup_kernel():
            client.execute_cell(nb.cells[0], 0)
            client.execute_cell(nb.cells[1], 1)
            with self.assertRaises(CellExecutionError):
                client.execute_cell(nb.cells[2], 2)
            client.execute_cell(nb.cells[3], 3)
        error = errors(nb.cells[2])
        self.assertEqual(len(error), 1, nb.cells[2].outputs)
        evalue = error[0]["evalue"]
        self.assertEqual(evalue.splitlines()[0], "mat1 and mat2 shapes cannot be multiplied (3x4 and 5x2)", evalue)
        self.assertTrue(evalue.splitlines()[1].startswith("(panicked at "), evalue)
        self.assertNotIn("Exception raised from", evalue)
        self.assertNotIn("frame #", evalue + streams(nb.cells[2]))
        self.assertEqual(streams(nb.cells[3]).strip(), "[3, 4]")

    def test_the_backtrace_comes_on_request(self):
        nb = notebook('let v: Vec<u8> = Vec::new();\nlet x = v[1];')
        os.environ["RUST_BACKTRACE"] = "1"
        try:
            client = NotebookClient(nb, kernel_name=KERNEL, timeout=600)
            with self.assertRaises(CellExecutionError):
                client.execute()
        finally:
            os.environ.pop("RUST_BACKTRACE", None)
        self.assertIn("index out of bounds", errors(nb.cells[0])[0]["evalue"])
        self.assertIn("stack backtrace:", streams(nb.cells[0]))


if __name__ == "__main__":
    unittest.main()
