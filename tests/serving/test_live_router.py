"""`make serve` in miniature: a run grown by a live expert (SmolLM2 zero-shot, scored on 24
TRAIN questions by the live-experts job, added from 20 probes by add_expert) is served with no
endpoint at all; the recorded experts are excluded and the live one answers from inside the
router process."""

import json

import httpx2 as httpx
import pytest

from configs import tiny
from configs.pools import MMLU_9, SMOLLM2_LIVE
from leeroo_jax.jobs import add_expert, experts

from servers import free_port, ready, start, stop

LIVE = SMOLLM2_LIVE[0]["name"]


@pytest.fixture(scope="module")
def grown_run(tiny_run, tmp_path_factory, smollm2_path):
    root = tmp_path_factory.mktemp("live_router")
    scored = tiny.get_config()
    scored.pool = [dict(e) for e in MMLU_9] + [dict(SMOLLM2_LIVE[0])]
    scored.output_root, scored.run_name, scored.job = str(root), "scored", "experts"
    scored.experts.questions, scored.experts.limit = "train", 24
    experts.run(scored)
    grow = tiny.get_config()
    grow.pool = scored.pool
    grow.job, grow.checkpoint = "add_expert", tiny_run
    grow.data.records = str(root / "scored" / "records")
    grow.add_expert.probes, grow.add_expert.run_name = 20, "tiny_live_router"
    add_expert.run(grow)
    return f"{tiny_run.rsplit('/', 1)[0]}/tiny_live_router"  # add_expert writes beside the base run


def test_a_run_with_a_live_expert_is_served_with_no_endpoint(grown_run, tmp_path):
    port, log = free_port(), tmp_path / "router.log"
    router = start([f"--checkpoint={grown_run}", "--chat-batch=1", "--chat-max-length=128", "--max-tokens=12"], port, log)
    try:
        ready(router, port, log)
        url = f"http://127.0.0.1:{port}"
        health = httpx.get(url + "/health").json()
        assert health["experts"] == {LIVE: "live (flax)"} and sorted(health["excluded"]) == sorted(e["name"] for e in MMLU_9)
        body = {"model": "leeroo-lambda-0", "messages": [{"role": "user", "content": "What is the capital of France?"}]}
        r = httpx.post(url + "/v1/chat/completions", content=json.dumps(body), timeout=60,
                       headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["model"] == out["leeroo"]["answered_by"] == out["leeroo"]["routing"]["expert"] == LIVE
        assert "Paris" in out["choices"][0]["message"]["content"] and out["leeroo"]["spent_usd"] > 0
        assert len(out["leeroo"]["routing"]["p_all"]) == 10  # the 9 recorded experts are scored, not asked
    finally:
        stop(router, log)
