"""The record store: real outcomes round-trip, bad rows write nothing, SIGKILL never corrupts."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from configs.pools import MMLU_9
from leeroo_jax.data.mmlu import load_questions
from leeroo_jax.errors import DataError
from leeroo_jax.data.pool import Pool
from leeroo_jax.data import records

OUTCOMES = records.__file__.replace("records.py", "assets/outcomes.csv.gz")
# From the data README: questions graded and accuracy per model.
README = {
    "gpt-4-1106-preview": (13937, 0.806),
    "mistralai/Mixtral-8x7B-Instruct-v0.1": (13937, 0.680),
    "meta-llama/Meta-Llama-3-8B": (6189, 0.648),
    "mistralai/Mistral-7B-v0.1": (6189, 0.624),
    "cognitivecomputations/dolphin-2.6-mistral-7b": (6189, 0.609),
    "meta-math/MetaMath-Mistral-7B": (6189, 0.601),
    "HuggingFaceH4/zephyr-7b-beta": (6189, 0.599),
    "cognitivecomputations/dolphin-2.9-llama3-8b": (6189, 0.596),
    "itpossible/Chinese-Mistral-7B-v0.1": (6189, 0.572),
}


@pytest.fixture(scope="module")
def questions():
    return load_questions()


@pytest.fixture(scope="module")
def imported(questions, tmp_path_factory):
    pool = Pool.from_config(MMLU_9)
    cost = pool.costs(questions)
    costs = {(q.id, e): cost[i, j] for i, q in enumerate(questions) for j, e in enumerate(pool.names)}
    store = records.RecordStore(tmp_path_factory.mktemp("rec") / "store", pool.names)
    n = records.import_outcomes(store, OUTCOMES, costs, {q.id for q in questions})
    return store, pool, cost, n


def test_import_real_outcomes_matches_the_data_readme(imported, questions):
    store, pool, cost, n = imported
    assert n == 71197 == len(store)
    dense = store.dense([q.id for q in questions])
    for e, name in enumerate(pool.names):
        graded, acc = README[name]
        assert dense.observed[:, e].sum() == graded
        assert dense.outcome[dense.observed[:, e], e].mean() == pytest.approx(acc, abs=5e-4)
    all_nine = dense.observed.all(1)
    assert all_nine.sum() == 6189
    assert dense.outcome[all_nine].max(1).mean() == pytest.approx(0.936, abs=5e-4)  # README's oracle
    # soft labels: RouterDC's 7B models carry `prob`, RouteLLM's GPT-4/Mixtral do not
    assert np.isnan(dense.soft[:, 0]).all() and (~np.isnan(dense.soft[all_nine, 2])).all()
    rows = store.read()
    j = np.flatnonzero(rows["qid"] == questions[0].id)[0]
    assert rows["cost"][j] == pytest.approx(cost[0, rows["expert"][j]])


def test_reopen_appends_after_committed_rows(imported):
    store, pool, _, n = imported
    again = records.RecordStore(store.dir)
    assert len(again) == n and again.experts == list(pool.names)
    qid = again.read()["qid"][0]
    assert again.append([qid], [pool.names[1]], [1.0], [0.001], round=1, source="test") == n + 1
    assert len(records.RecordStore(store.dir)) == n + 1
    assert records.RecordStore(store.dir).read()["round"][-1] == 1


@pytest.mark.parametrize("kwargs, msg", [
    (dict(experts=["gpt-5"]), "unknown expert 'gpt-5'"),
    (dict(outcomes=[float("nan")]), "NaN or outside"),
    (dict(outcomes=[1.5]), "NaN or outside"),
    (dict(qids=["00000000000000ff"]), "not in the question set"),
    (dict(costs=[-1.0]), "negative"),
])
def test_bad_rows_write_nothing(tmp_path, kwargs, msg):
    store = records.RecordStore(tmp_path / "s", ["a", "b"])
    store.append(["0000000000000001"], ["a"], [1.0], [0.1], known_ids={"0000000000000001"})
    args = dict(qids=["0000000000000001"], experts=["b"], outcomes=[0.0], costs=[0.1])
    args.update(kwargs)
    with pytest.raises(DataError, match=msg) as e:
        store.append(**args, known_ids={"0000000000000001"})
    assert "\n" not in str(e.value)
    assert len(records.RecordStore(tmp_path / "s")) == 1


def test_bad_csv_row_leaves_store_untouched(tmp_path):
    csv_path = tmp_path / "o.csv"
    csv_path.write_text("id,model,correct,prob\n0000000000000001,a,1,\n0000000000000001,a,2,\n")
    store = records.RecordStore(tmp_path / "s", ["a"])
    with pytest.raises(DataError, match="o.csv:3"):
        records.import_outcomes(store, csv_path, {("0000000000000001", "a"): 0.0}, {"0000000000000001"})
    assert len(records.RecordStore(tmp_path / "s")) == 0


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from leeroo_jax.data.records import RecordStore
    store = RecordStore(sys.argv[1], ["a", "b", "c"])
    while True:
        n = len(store)
        i = np.arange(n, n + 500)
        store.append([f"{x:016x}" for x in i], [("a", "b", "c")[x % 3] for x in i], (i % 2).tolist(),
                     (i * 1e-6).tolist(), round=int(n // 500))
        print(len(store), flush=True)
""")


def _check_consistent(path):
    store = records.RecordStore(path)
    n = len(store)
    assert n % 500 == 0
    rows = store.read()
    i = np.arange(n)
    np.testing.assert_array_equal(rows["qid"], np.array([f"{x:016x}" for x in i]))
    np.testing.assert_array_equal(rows["expert"], i % 3)
    np.testing.assert_array_equal(rows["outcome"], i % 2)
    np.testing.assert_allclose(rows["cost"], i * 1e-6)
    return n


def test_sigkill_mid_append_never_corrupts(tmp_path):
    path = tmp_path / "killed"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    committed = 0
    for delay in (0.0, 0.7, 1.9):  # a kill during start-up, and two during the append loop
        proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while time.time() < deadline:  # wait until this writer has committed at least one batch
            line = proc.stdout.readline()
            if line and int(line) > committed:
                break
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        n = _check_consistent(path)
        assert n > committed  # progress was made and kept
        committed = n
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["rows"] == committed
