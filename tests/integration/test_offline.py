"""The product works with no route out: ingest, ask and serve inside a network namespace that has only
loopback. Any outbound connection there fails at the kernel, so a hidden download or telemetry call would
break the run."""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_CORPUS
from tests.serving.server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUESTION = "How quickly does the on-call engineer have to acknowledge a SEV1 page?"

CLIENT = textwrap.dedent("""
    import json, socket, sys, time, urllib.request
    # The premise: nothing but loopback is reachable here.
    for target in [("1.1.1.1", 443), ("8.8.8.8", 53)]:
        try:
            socket.create_connection(target, timeout=2)
            sys.exit(f"outbound connection to {target} succeeded: not isolated")
        except OSError:
            pass
    base = sys.argv[1]
    for _ in range(600):
        try:
            with urllib.request.urlopen(base + "/readyz") as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        time.sleep(0.2)
    else:
        sys.exit("server never became ready")
    body = json.dumps({"model": "local", "messages": [{"role": "user", "content": sys.argv[2]}]}).encode()
    request = urllib.request.Request(base + "/v1/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as r:
        reply = json.load(r)
    print(json.dumps({"answer": reply["choices"][0]["message"]["content"], "citations": reply["citations"]}))
""")


def _can_isolate() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_isolate(), reason="needs root and `unshare -n` (util-linux) plus `ip` (iproute2)")
def test_ingest_ask_and_serve_with_no_route_out(real_container, tmp_path: Path):
    data_dir = tmp_path / "data"
    (tmp_path / "client.py").write_text(CLIENT)
    port = free_port()
    rag = f"{sys.executable} -m serving.cli --data-dir {data_dir}"
    script = f"""
        set -e
        ip link set lo up
        {rag} ingest --public {SAMPLE_CORPUS}
        {rag} ask --json "{QUESTION}" > {tmp_path}/ask.json
        {rag} serve --port {port} --allow-anonymous > {tmp_path}/serve.log 2>&1 &
        server=$!
        {sys.executable} {tmp_path}/client.py http://127.0.0.1:{port} "{QUESTION}" > {tmp_path}/chat.json
        kill $server
        wait $server || true
    """
    run = subprocess.run(["unshare", "-n", "bash", "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr + (tmp_path / "serve.log").read_text(errors="replace")
    assert "7 added, 0 updated, 0 unchanged, 0 removed, 0 failed" in run.stderr.replace("\n", " ")
    import json

    ask = json.loads((tmp_path / "ask.json").read_text())
    assert ask["found"] and ask["citations"][0]["source"].endswith("incident-response-runbook.md")
    chat = json.loads((tmp_path / "chat.json").read_text())
    assert chat["answer"] and chat["citations"][0]["source"].endswith("incident-response-runbook.md")
