"""`make classroom`, end to end: a lab session's JupyterHub on 127.0.0.1.

Three students log in (the hub's login page, then its REST API with their own
token), start their servers, find the chapter notebooks in their homes, and run
notebook ch02's first code cells on the Rust kernel, at the same time, through
their own server's API. Each sees their own results: their name, their home,
their own copy of the notebook.
"""
import asyncio
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import uuid
from pathlib import Path

import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = "ch02_working_with_text.ipynb"
STUDENTS = ["ada", "grace", "alan"]
FIRST_CELLS = 3  # the chapter's first code cells: `:dep`, its settings, reading the text


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run_cells(ws_url, token, cells):
    """Execute `cells` in order on a kernel's websocket; each cell's (status, text)."""
    ws = await websocket_connect(HTTPRequest(ws_url, headers={"Authorization": f"token {token}"},
                                             connect_timeout=600, request_timeout=600),
                                 max_message_size=64 << 20)
    session, results = uuid.uuid4().hex, []
    try:
        for code in cells:
            msg_id = uuid.uuid4().hex
            await ws.write_message(json.dumps({
                "header": {"msg_id": msg_id, "username": "test", "session": session,
                           "msg_type": "execute_request", "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell",
                "content": {"code": code, "silent": False, "store_history": True,
                            "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
            text, status = [], None
            while status is None:
                raw = await asyncio.wait_for(ws.read_message(), timeout=900)
                if raw is None:
                    raise RuntimeError("the kernel's websocket closed")
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["header"]["msg_type"], msg["content"]
                if kind == "stream":
                    text.append(content["text"])
                elif kind in ("execute_result", "display_data"):
                    text.append(content["data"].get("text/plain", ""))
                elif kind == "error":
                    text.append(f"{content['ename']}: {content['evalue']}")
                elif kind == "execute_reply":
                    status = content["status"]
            results.append((status, "".join(text)))
    finally:
        ws.close()
    return results


class ClassroomTest(unittest.TestCase):
    def setUp(self):
        proxy = Path(os.environ.get("LLM_RS_CACHE", Path.home() / ".cache/llm-rs")) / \
            "classroom-proxy/node_modules/.bin/configurable-http-proxy"
        if not proxy.exists():
            self.fail(f"no JupyterHub proxy at {proxy}: make setup installs it with npm")
        self.dir = Path(tempfile.mkdtemp(prefix="llm-rs-classroom-"))
        self.port = free_port()
        self.password = secrets.token_urlsafe(12)
        env = dict(os.environ, CLASSROOM_DIR=str(self.dir), CLASSROOM_PASSWORD=self.password,
                   CLASSROOM_PORT=str(self.port), CLASSROOM_HUB_PORT=str(free_port()),
                   CLASSROOM_PROXY_API_PORT=str(free_port()))
        self.log = open(self.dir / "hub.log", "w")
        self.hub = subprocess.Popen(["bash", str(ROOT / "scripts/classroom.sh")], env=env, cwd=ROOT,
                                    stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.addCleanup(self.stop_hub)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 120
        while True:
            try:
                if requests.get(f"{self.base}/hub/api", timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            if self.hub.poll() is not None or time.time() > deadline:
                self.fail(f"the hub did not come up:\n{(self.dir / 'hub.log').read_text()[-3000:]}")
            time.sleep(1)

    def stop_hub(self):
        if self.hub.poll() is None:
            os.killpg(self.hub.pid, signal.SIGTERM)
            try:
                self.hub.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.hub.pid, signal.SIGKILL)
        self.log.close()
        if not os.environ.get("LLM_KEEP_CLASSROOM"):  # keep the hub log and homes to look into
            subprocess.run(["rm", "-rf", str(self.dir)])

    def log_in(self, name):
        """The login page, as a browser would; then a token from the REST API."""
        def attempt(password):
            s = requests.Session()
            s.get(f"{self.base}/hub/login", timeout=30)
            r = s.post(f"{self.base}/hub/login", timeout=60, allow_redirects=False,
                       data={"username": name, "password": password, "_xsrf": s.cookies.get("_xsrf")})
            return s, r

        _, bad = attempt("wrong-password")
        self.assertNotIn(bad.status_code, (302, 303), "a wrong password must not log in")
        s, r = attempt(self.password)
        self.assertIn(r.status_code, (302, 303), f"{name}'s login: {r.status_code} {r.text[:300]}")
        xsrf = s.cookies.get("_xsrf")
        r = s.post(f"{self.base}/hub/api/users/{name}/tokens", json={"note": "classroom test"},
                   headers={"X-XSRFToken": xsrf}, timeout=30)
        self.assertEqual(r.status_code, 201, r.text)
        return r.json()["token"]

    def api(self, method, path, token, **kw):
        r = requests.request(method, f"{self.base}{path}", headers={"Authorization": f"token {token}"},
                             timeout=120, **kw)
        self.assertLess(r.status_code, 400, f"{method} {path}: {r.status_code} {r.text[:500]}")
        return r.json() if r.text else None

    def start_server(self, name, token):
        self.api("POST", f"/hub/api/users/{name}/server", token)
        deadline = time.time() + 300
        while not (self.api("GET", f"/hub/api/users/{name}", token).get("servers", {}).get("", {}).get("ready")):
            self.assertLess(time.time(), deadline, f"{name}'s server did not start")
            time.sleep(1)

    def test_three_students(self):
        tokens = {name: self.log_in(name) for name in STUDENTS}
        # each token is its owner's alone
        r = requests.get(f"{self.base}/hub/api/users/grace", headers={"Authorization": f"token {tokens['ada']}"},
                         timeout=30)
        self.assertIn(r.status_code, (403, 404))
        for name, token in tokens.items():
            self.start_server(name, token)

        jobs = {}
        for name, token in tokens.items():
            listing = self.api("GET", f"/user/{name}/api/contents/llm-from-scratch", token)
            names = {f["name"] for f in listing["content"]}
            self.assertIn(CHAPTER, names)
            self.assertFalse([n for n in names if "solutions" in n], "students get no solutions")
            nb = self.api("GET", f"/user/{name}/api/contents/llm-from-scratch/{CHAPTER}", token)["content"]
            code = [c["source"] for c in nb["cells"] if c["cell_type"] == "code"][:FIRST_CELLS]
            self.assertRegex(code[0], r':dep llm_core = \{ path = "/[^"]+/llm_core" \}')
            code.append('let who = std::env::var("JUPYTERHUB_USER")?;\n'
                        'println!("{who} in {}", std::env::current_dir()?.display());\n'
                        'println!("{} characters", raw_text.len());')
            kernel = self.api("POST", f"/user/{name}/api/kernels", token, json={"name": "llm-rust"})
            ws = f"ws://127.0.0.1:{self.port}/user/{name}/api/kernels/{kernel['id']}/channels"
            jobs[name] = run_cells(ws, token, code)

        async def everyone():
            return await asyncio.gather(*jobs.values())

        data = Path(os.environ.get("LLM_DATA_DIR") or ROOT.parent / "shared" / "data")
        verdict_bytes = len((data / "the-verdict.txt").read_bytes())
        started = time.time()
        results = dict(zip(jobs, asyncio.run(everyone())))
        seconds = time.time() - started
        for name, cells in results.items():
            for i, (status, text) in enumerate(cells):
                self.assertEqual(status, "ok", f"{name}'s cell {i}: {text[-1500:]}")
            last = cells[-1][1]
            self.assertIn(f"{name} in {self.dir / 'homes' / name}", last)
            self.assertIn(f"{verdict_bytes} characters", last)
        print(f"\nclassroom: {len(STUDENTS)} students ran ch02's first {FIRST_CELLS} cells at once in {seconds:.0f} s")


if __name__ == "__main__":
    unittest.main()
