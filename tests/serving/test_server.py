"""The server on loopback, with real parts only: the official `openai` client, a second server
serving SmolLM2 as the "external" OpenAI-compatible expert (so forwarding crosses a real HTTP
hop), a socket that accepts and never answers (an expert timing out), and SIGTERM.

The router serves the tiny run (9 recorded experts): Llama-3-8B and Mistral-7B are mapped to
the SmolLM2 server, GPT-4 to the silent socket, the other six stay recorded-only (excluded).
Tests run in file order: the last ones stop the expert server, then the router.
"""

import concurrent.futures
import json
import re
import signal
import socket
import threading
import time

import httpx2 as httpx
import pytest
from openai import OpenAI

from leeroo_jax.serving import budgets
from servers import free_port, ready, start, stop

KEY = "sk-test-7f3a9c"  # a made-up key: it must never show up in /metrics or a log line
GPT4, LLAMA3, MISTRAL = "gpt-4-1106-preview", "meta-llama/Meta-Llama-3-8B", "mistralai/Mistral-7B-v0.1"
CHAT = [{"role": "user", "content": "What is the capital of France?"}]


class Silent:
    """A TCP listener that accepts connections and never answers: an expert timing out."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port, self.conns = self.sock.getsockname()[1], []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return


@pytest.fixture(scope="module")
def servers(tiny_run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    silent = Silent()
    p_expert, p_router = free_port(), free_port()
    (tmp / "endpoints.json").write_text(json.dumps({
        LLAMA3: {"base_url": f"http://127.0.0.1:{p_expert}/v1", "model": "smollm2"},
        MISTRAL: {"base_url": f"http://127.0.0.1:{p_expert}/v1", "model": "smollm2"},
        GPT4: {"base_url": f"http://127.0.0.1:{silent.port}/v1", "api_key_env": "OPENAI_API_KEY"}}))
    (tmp / "keys").write_text(f"{KEY}\nsecond-key\n")
    expert = start(["--expert=smollm2", "--chat-batch=2", "--chat-max-length=128", "--max-tokens=12"], p_expert,
                    tmp / "expert.log")
    router = start([f"--checkpoint={tiny_run}", f"--endpoints={tmp / 'endpoints.json'}", f"--api-keys-file={tmp / 'keys'}",
                     "--max-tokens=12", "--max-prompt-chars=2000", "--expert-timeout-s=3", "--max-batch=16",
                     "--max-wait-ms=50"], p_router, tmp / "router.log")
    try:
        ready(expert, p_expert, tmp / "expert.log")
        ready(router, p_router, tmp / "router.log")
        yield {"router": router, "expert": expert, "url": f"http://127.0.0.1:{p_router}", "tmp": tmp,
               "expert_url": f"http://127.0.0.1:{p_expert}"}
    finally:
        for proc in (router, expert):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _post(servers, path: str, body, key: str | None = KEY, timeout: float = 60) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    content = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return httpx.post(servers["url"] + path, content=content, headers=headers | {"content-type": "application/json"},
                      timeout=timeout)


def _error(r: httpx.Response, status: int, code: str) -> str:
    """The OpenAI error schema's message, after checking the status and code."""
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == code, err
    return err["message"]


def test_start_up_names_what_answers_and_what_is_excluded(servers):
    health = httpx.get(servers["url"] + "/health").json()  # open without a key
    assert set(health["experts"]) == {GPT4, LLAMA3, MISTRAL}
    assert len(health["excluded"]) == 6 and GPT4 not in health["excluded"]
    log = (servers["tmp"] / "router.log").read_text()
    assert "excluded (recorded only, no endpoint): " in log and "compiled" in log


def test_openai_client_non_stream_and_stream_give_the_same_answer(servers):
    client = OpenAI(base_url=servers["url"] + "/v1", api_key=KEY, max_retries=0)
    done = client.chat.completions.create(model="leeroo-cap-1e-5", messages=CHAT, max_tokens=12)
    extra = done.to_dict()["leeroo"]
    assert done.model in (LLAMA3, MISTRAL) and done.model == extra["routing"]["expert"] == extra["answered_by"]
    assert extra["routing"]["budget"] == "leeroo-cap-1e-05" and extra["routing"]["cost_usd"] <= 1e-5
    assert len(extra["routing"]["p_all"]) == 9 and GPT4 in extra["routing"]["p_all"]  # every expert scored
    assert "Paris" in done.choices[0].message.content  # SmolLM2-135M-Instruct, greedy, via the second server
    assert done.usage.prompt_tokens > 0 and done.usage.completion_tokens > 0
    # the same request streamed: the same expert, and its deltas join to the same text
    chunks = list(client.chat.completions.create(model="leeroo-cap-1e-5", messages=CHAT, max_tokens=12, stream=True))
    assert {c.model for c in chunks} == {done.model}
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == done.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].to_dict()["leeroo"]["answered_by"] == done.model


def test_auth_rejects_a_missing_or_wrong_key_before_any_scoring(servers):
    body = {"model": "leeroo-cap-1e-5", "messages": CHAT}
    for key in (None, "sk-wrong"):
        assert "API key" in _error(_post(servers, "/v1/chat/completions", body, key=key), 401, "invalid_api_key")
    assert _post(servers, "/v1/route", body, key="second-key").status_code == 200
    metrics = httpx.get(servers["url"] + "/metrics", headers={"Authorization": f"Bearer {KEY}"})
    assert metrics.status_code == 200 and KEY not in metrics.text and "second-key" not in metrics.text
    assert re.search(r'leeroo_requests_total\{endpoint="/v1/chat/completions",status="401"\} 2\.0', metrics.text)
    assert httpx.get(servers["url"] + "/metrics").status_code == 401
    for log in ("router.log", "expert.log"):
        assert KEY not in (servers["tmp"] / log).read_text()


@pytest.mark.parametrize("body, status, code, says", [
    ("{not json", 400, "invalid_json", "not valid JSON"),
    ({"model": "gpt-4", "messages": CHAT}, 404, "model_not_found", "leeroo-cap-<USD per query>"),
    ({"model": "leeroo-cap-1e-9", "messages": CHAT}, 400, "budget_too_low", LLAMA3),
    ({"model": "leeroo-cap-1e-5", "messages": []}, 400, "invalid_messages", "non-empty"),
    ({"model": "leeroo-cap-1e-5", "messages": [{"role": "user", "content": "x" * 2001}]}, 413, "prompt_too_long", "2000"),
    ({"model": "leeroo-cap-1e-5", "messages": CHAT, "max_tokens": 0}, 400, "invalid_max_tokens", "positive"),
])
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(servers, body, status, code, says):
    assert says in _error(_post(servers, "/v1/chat/completions", body), status, code)
    assert _post(servers, "/v1/route", {"model": "leeroo-lambda-0", "messages": CHAT}).status_code == 200


def test_unknown_model_lists_every_valid_form(servers):
    msg = _error(_post(servers, "/v1/chat/completions", {"model": "router-mf-0.116", "messages": CHAT}), 404,
                 "model_not_found")
    assert all(form in msg for form in budgets.FORMS)


def test_an_expert_timing_out_hands_over_to_the_next_best_under_the_budget(servers):
    """lambda 0 picks the best p, GPT-4, whose endpoint never answers: after the 3 s expert
    timeout the same budget's next choice answers, and the response says so."""
    t0 = time.time()
    r = _post(servers, "/v1/chat/completions", {"model": "leeroo-lambda-0", "messages": CHAT})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["leeroo"]["routing"]["expert"] == GPT4 and body["leeroo"]["failed"] == [GPT4]
    assert body["model"] in (LLAMA3, MISTRAL) and 3 <= time.time() - t0 < 30


def test_concurrent_requests_share_a_scoring_batch(servers):
    before = _batches(servers)
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(lambda _: _post(servers, "/v1/route", {"model": "leeroo-cap-1e-5", "messages": CHAT})
                              .status_code, range(12)))
    assert codes == [200] * 12
    n, total, timed, seconds = (a - b for a, b in zip(_batches(servers), before))
    assert total == 12 and n < 12  # every request scored once; some batches held several
    assert timed == n and 0 < seconds < 60  # and each batch's scoring time was recorded


def _batches(servers) -> tuple[float, ...]:
    """(batches, queries in them, batches timed, their scoring seconds) from /metrics."""
    text = httpx.get(servers["url"] + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    return tuple(float(re.search(rf"leeroo_route_batch_{m} (\S+)", text).group(1))
                 for m in ("size_count", "size_sum", "seconds_count", "seconds_sum"))


def test_with_every_affordable_expert_down_the_answer_is_a_502(servers):
    stop(servers["expert"], servers["tmp"] / "expert.log")
    r = _post(servers, "/v1/chat/completions", {"model": "leeroo-cap-1e-5", "messages": CHAT})
    assert set(r.json()["error"]["message"].split("failed: ")[1].rstrip(")").split(", ")) == {LLAMA3, MISTRAL}
    _error(r, 502, "upstream_unavailable")


def test_shutdown_with_requests_in_flight_answers_each_and_exits(servers):
    """SIGTERM while 6 requests wait on the silent GPT-4 endpoint: each still gets its answer
    (a 502: its fallbacks are down too) before the server exits cleanly."""
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(_post, servers, "/v1/chat/completions", {"model": "leeroo-lambda-0", "messages": CHAT},
                               KEY, 40) for _ in range(6)]
        time.sleep(1.0)
        t0 = time.time()
        servers["router"].send_signal(signal.SIGTERM)
        codes = [f.result().status_code for f in futures]
    assert codes == [502] * 6
    stop(servers["router"], servers["tmp"] / "router.log", signalled=True)
    assert time.time() - t0 < 40
