"""Live experts on the real SmolLM2-135M-Instruct weights and real MMLU questions, against
transformers (torch): letter log-probs, the prefix-cached k-shot path, 2..10 options, chat."""

from __future__ import annotations

import time

import jax
import numpy as np
import pytest
import torch

from leeroo_jax import sharding
from leeroo_jax.data import mmlu, splits
from leeroo_jax.data.pool import Expert, by_subject
from leeroo_jax.errors import ConfigError, WeightsError
from leeroo_jax.experts.live import LiveExpert, check_decoder, parse_letter
from leeroo_jax.weights.loader import load


@pytest.fixture(scope="module")
def questions():
    return mmlu.load_questions()


@pytest.fixture(scope="module")
def bank(questions):
    return by_subject(questions)


@pytest.fixture(scope="module")
def smol(smollm2_path):
    """(our model on one device, its tokenizer, the torch model)."""
    from transformers import LlamaForCausalLM

    loaded = load(smollm2_path, sharding.make_mesh(sharding.MeshConfig(), devices=jax.devices()[:1]))
    torch_model = LlamaForCausalLM.from_pretrained(smollm2_path, local_files_only=True, dtype=torch.float32).eval()
    return loaded, torch_model


def _expert(recipe: str, name: str = "smol") -> Expert:
    return Expert(name, 0.1, 0.1, backend="flax", checkpoint="smollm2", recipe=recipe)


def _live(smol, bank, recipe, mesh=None, **kw) -> LiveExpert:
    loaded, _ = smol
    return LiveExpert(_expert(recipe), loaded.model, loaded.tokenizer, mesh or loaded.mesh, bank, **kw)


def _collect(live: LiveExpert, qs):
    ids = live.prompt_ids(qs)
    logp, probs, choice = (np.full((len(qs), 10), np.nan), np.full((len(qs), 10), np.nan), np.zeros(len(qs), int))
    seconds, start = 0.0, time.perf_counter()
    for a in live.answer(qs, ids):
        logp[a.index], probs[a.index], choice[a.index] = a.logp, a.probs, a.choice
        assert (a.in_tokens == [len(ids[i]) for i in a.index]).all()
        seconds += a.seconds
    wall = time.perf_counter() - start
    assert 0.95 * wall <= seconds <= wall  # the recorded wall_s of the batches sum to the loop's wall time
    return ids, logp, probs, choice


def _torch_letter_logp(torch_model, ids, letter_ids, batch: int = 16):
    """transformers' next-token log-probs of the letters after each prompt: prompts of similar
    length run together, right-padded (causal: the padding after a prompt never reaches it)."""
    out = np.empty((len(ids), len(letter_ids)), np.float32)
    order = np.argsort([len(x) for x in ids], kind="stable")
    with torch.no_grad():
        for s in range(0, len(ids), batch):
            rows = order[s:s + batch]
            width = max(len(ids[r]) for r in rows)
            tokens = torch.tensor([list(ids[r]) + [0] * (width - len(ids[r])) for r in rows])
            mask = torch.tensor([[1] * len(ids[r]) + [0] * (width - len(ids[r])) for r in rows])
            logits = torch_model(tokens, attention_mask=mask).logits  # [b, width, V]
            last = torch.tensor([len(ids[r]) - 1 for r in rows])
            out[rows] = logits[torch.arange(len(rows)), last].log_softmax(-1)[:, letter_ids].numpy()
    return out


def test_zero_shot_letter_logprobs_match_transformers_on_200_real_questions(smol, bank, questions):
    """The job's path (length buckets, dummy rows, pipelining) on the 200 shortest TEST prompts."""
    live = _live(smol, bank, "mmlu_0shot")
    test = [q for q in questions if splits.split_of(q.id) is splits.Split.TEST]
    test = sorted(test, key=lambda q: len(mmlu.prompt(q)))[:200]
    ids, logp, probs, choice = _collect(live, test)
    want = _torch_letter_logp(smol[1], ids, np.asarray(live.letter_ids).tolist())
    np.testing.assert_allclose(logp, want, atol=1e-3)
    assert (choice == want[:, :4].argmax(1)).all()  # identical letters, over the four options
    assert np.isnan(probs[:, 4:]).all() and np.allclose(probs[:, :4].sum(1), 1, atol=1e-5)
    assert len({q.subject for q in test}) > 10


def test_five_shot_prefix_cache_equals_the_whole_prompt_in_transformers(smol, bank, questions):
    """Two subjects, each with questions sharing its prefix and one exemplar (its own prefix)."""
    live = _live(smol, bank, "mmlu_5shot")
    picked = []
    for subject in ("high_school_geography", "marketing"):
        subj = [q for q in questions if q.subject == subject]
        shots = mmlu.few_shot_exemplars(subj[0], bank[subject], 5)
        picked += [q for q in subj if splits.split_of(q.id) is splits.Split.TEST][:3] + shots[:1]
    ids, logp, _, choice = _collect(live, picked)
    for q, x in zip(picked, ids):  # the model read exactly the lm-eval 5-shot prompt
        assert live.tokenizer.decode(x) == mmlu.prompt(q, mmlu.few_shot_exemplars(q, bank[q.subject], 5))
    want = _torch_letter_logp(smol[1], ids, np.asarray(live.letter_ids).tolist())
    np.testing.assert_allclose(logp, want, atol=1e-3)
    assert (choice == want[:, :4].argmax(1)).all()
    assert min(len(x) for x in ids) > 300  # the prefix really is long


def test_two_to_ten_options_score_over_their_own_letters(smol, bank, questions):
    base = questions[0]
    qs = [mmlu.make_question(base.subject, base.question, [f"option {i}" for i in range(n)], n - 1, "test")
          for n in (2, 3, 10)]
    live = _live(smol, bank, "mmlu_0shot")
    ids, logp, probs, choice = _collect(live, qs)
    for i, n in enumerate((2, 3, 10)):
        assert np.isnan(probs[i, n:]).all() and abs(probs[i, :n].sum() - 1) < 1e-5
        assert 0 <= choice[i] < n
    want = _torch_letter_logp(smol[1], ids, np.asarray(live.letter_ids).tolist())
    np.testing.assert_allclose(logp, want, atol=1e-3)
    assert choice[2] == want[2].argmax()  # all ten letters compete on the 10-option question


def test_sharded_mesh_gives_the_same_letters(smol, bank, questions, smollm2_path):
    """data=2 x fsdp=2 x tensor=2: weights placed by the logical rules, rows split over data x fsdp."""
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = load(smollm2_path, mesh)
    assert len(sharded.model.embed[...].sharding.device_set) == 8
    live = LiveExpert(_expert("mmlu_0shot"), sharded.model, sharded.tokenizer, mesh, bank, batch=4)
    qs = [q for q in questions if splits.split_of(q.id) is splits.Split.TEST][:6]  # 6 rows: a dummy-padded batch
    _, logp, _, choice = _collect(live, qs)
    _, logp1, _, choice1 = _collect(_live(smol, bank, "mmlu_0shot"), qs)
    np.testing.assert_allclose(logp, logp1, atol=1e-4)
    assert (choice == choice1).all()


def test_chat_recipe_generates_greedily_and_parses_the_letter(smol, bank, questions):
    live = _live(smol, bank, "chat", max_new_tokens=8)
    qs = [q for q in questions if splits.split_of(q.id) is splits.Split.TEST][:3]
    ids = live.prompt_ids(qs)
    answers = list(live.answer(qs, ids))
    replies, choice = {}, {}
    for a in answers:
        for r, i in enumerate(a.index):
            replies[i], choice[i] = a.replies[r], a.choice[r]
            assert 1 <= a.out_tokens[r] <= 8
    with torch.no_grad():  # the same greedy continuation as transformers
        for i, x in enumerate(ids):
            out = smol[1].generate(torch.tensor([x]), max_new_tokens=8, do_sample=False)[0, len(x):]
            assert replies[i] == live.tokenizer.decode(out, skip_special_tokens=True).strip()
            assert choice[i] == parse_letter(replies[i], 4)


@pytest.mark.parametrize("reply,n,want", [
    ("B", 4, 1), ("(C) Paris", 4, 2), ("The answer is D.", 4, 3), ("answer: a", 4, 0), ("J. ten", 10, 9),
    ("J. ten", 4, -1), ("I am not sure.", 4, -1), ("", 4, -1), ("Option B is right", 4, 1),
])
def test_parse_letter(reply, n, want):
    assert parse_letter(reply, n) == want


def test_a_live_expert_must_be_an_existing_decoder(minilm_path, tmp_path):
    with pytest.raises(ConfigError, match="encoder, not a decoder"):
        check_decoder(Expert("bert", 0.1, 0.1, backend="flax", checkpoint=str(minilm_path), recipe="mmlu_0shot"))
    with pytest.raises(WeightsError, match="does not exist"):
        check_decoder(Expert("gone", 0.1, 0.1, backend="flax", checkpoint=str(tmp_path / "nope"), recipe="mmlu_0shot"))


@pytest.mark.parametrize("entry,msg", [
    (dict(backend="flax", recipe="mmlu_0shot"), "names no checkpoint"),
    (dict(backend="flax", checkpoint="smollm2", recipe="mmlu_fewshot"), "recipe 'mmlu_fewshot'"),
    (dict(backend="flax", checkpoint="smollm2", recipe="chat", dtype="int8"), "dtype 'int8'"),
    (dict(backend="torch"), "backend 'torch'"),
    (dict(checkpoint="smollm2"), "backend is 'recorded'"),
])
def test_bad_live_expert_entries_are_one_line_errors(entry, msg):
    with pytest.raises(ConfigError, match=msg):
        Expert("x", 0.1, 0.1, **entry)
