"""What cannot run is refused before it starts (issue 20, item 4): a provider without its key, a
base URL nothing answers at, a model the demo does not serve; on the page, the API and the CLI,
for batches and experiments. Against real sockets: a closed port, a server that answers 404 to
everything, and one that accepts connections and never answers."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from crewdash.providers.llm import LLMSettings
from crewdash.providers.preflight import PreflightError, preflight
from tests.api_server import api_server
from tests.apptest import quick_demo, start
from tests.browser import free_port
from tests.test_text import unescape
from ui.session import runtime

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture()
def closed_url() -> str:
    """A base URL on a port nothing listens on."""
    return f"http://127.0.0.1:{free_port()}/v1"


@pytest.fixture()
def answers_404() -> Iterator[str]:
    """A server that is there but knows no `/models` route."""

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture()
def silent_url() -> Iterator[str]:
    """A socket that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    sock.close()


def test_a_provider_without_its_key_is_refused() -> None:
    with pytest.raises(PreflightError, match=r"OpenAI needs an API key.*OPENAI_API_KEY"):
        preflight([LLMSettings(provider="openai", model="gpt-4o-mini")])
    with pytest.raises(PreflightError, match="GEMINI_API_KEY or GOOGLE_API_KEY"):
        preflight([LLMSettings(provider="gemini", model="gemini-2.0-flash")])
    preflight([LLMSettings(provider="openai", model="gpt-4o-mini", api_key="sk-typed")])


def test_a_model_the_demo_does_not_serve_is_refused() -> None:
    with pytest.raises(PreflightError, match=r"no model 'gpt-9'.*demo-fast"):
        preflight([LLMSettings(model="gpt-9")])
    preflight([LLMSettings(model="demo-fast")])


def test_a_base_url_is_refused_only_when_nothing_answers(
    closed_url: str, answers_404: str, silent_url: str
) -> None:
    def compatible(url: str) -> LLMSettings:
        return LLMSettings(provider="openai_compatible", model="m", base_url=url)

    with pytest.raises(PreflightError, match=f"cannot reach the model server at {closed_url}"):
        preflight([compatible(closed_url)])
    preflight([compatible(answers_404)])  # a 404 for /models: a server is there
    started = time.monotonic()
    with pytest.raises(PreflightError, match=r"did not answer within 0\.5 s"):
        preflight([compatible(silent_url)], timeout_s=0.5)
    assert time.monotonic() - started < 10  # bounded: the check never hangs a Run
    with pytest.raises(PreflightError, match="http:// or https://"):
        preflight([compatible("ftp://example.invalid/v1")])


def test_the_api_refuses_batches_and_experiments_that_cannot_run(
    tmp_path: Path, closed_url: str
) -> None:
    env = {"OPENAI_API_KEY": "sk-preflight-test", "OPENAI_BASE_URL": closed_url}
    with (
        api_server(tmp_path, **env) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        answer = client.post("/batches", json={"topics": ["never starts"]})
        assert answer.status_code == 400, answer.text
        assert "cannot reach the model server" in answer.json()["detail"]
        research = client.post("/research", json={"topics": ["never starts"]})
        assert research.status_code == 400, research.text
        variants = [
            {"name": "mini", "provider": "openai", "model": "gpt-4o-mini"},
            {"name": "big", "provider": "openai", "model": "gpt-4o"},
        ]
        experiment = client.post("/experiments", json={"topics": ["x"], "variants": variants})
        assert experiment.status_code == 400, experiment.text
        assert "variant 'mini': cannot reach" in experiment.json()["detail"]
        assert client.get("/batches").json() == []  # nothing landed in the history
    assert "Traceback" not in (tmp_path / "api.log").read_text()


def test_the_cli_exits_2_with_the_reason(tmp_path: Path, closed_url: str) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "OPENAI_API_KEY": "sk-preflight-test",
        "OPENAI_BASE_URL": closed_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'history.db'}",
    }
    result = subprocess.run(
        [sys.executable, "-m", "crewdash", "run", "never starts", "--no-history"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "cannot reach the model server at " + closed_url in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture()
def quick() -> Iterator[None]:
    yield from quick_demo("0.05")


def test_the_run_page_refuses_openai_without_a_key(quick: None) -> None:
    at = start()
    at.session_state["sidebar.provider"] = "openai"
    at.session_state["sidebar.model"] = "gpt-4o-mini"
    at.text_area(key="run.topics").input("needs a key")
    at.button(key="FormSubmitter:run.form-Run").click().run()
    assert not at.exception
    assert any("OpenAI needs an API key" in e.value for e in at.error), [e.value for e in at.error]
    assert runtime().runner.batch_ids() == []  # nothing started, nothing in the history
    assert "batch" not in at.query_params


def test_the_run_page_refuses_a_url_nothing_answers_at(quick: None, closed_url: str) -> None:
    at = start()
    at.session_state["sidebar.provider"] = "openai_compatible"
    at.session_state["sidebar.model"] = "local-model"
    at.session_state["sidebar.base_url"] = closed_url
    at.text_area(key="run.topics").input("needs a server")
    at.button(key="FormSubmitter:run.form-Run").click().run()
    assert not at.exception
    shown = [unescape(e.value).replace("\u2060", "") for e in at.error]  # the URL is text
    assert any(f"cannot reach the model server at {closed_url}" in e for e in shown), shown
    assert runtime().runner.batch_ids() == []
