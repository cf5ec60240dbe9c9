"""The record store: real outcomes round-trip, bad rows write nothing, SIGKILL never corrupts."""

import json
import os
import shutil
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


def test_reopen_with_another_pool_order_maps_by_name(tmp_path):
    store = records.RecordStore(tmp_path / "s", ["a", "b"])
    store.append(["0000000000000001"], ["b"], [1.0], [0.1])
    again = records.RecordStore(tmp_path / "s", ["c", "b"])  # the pool policy is the caller's now
    assert again.experts == ["a", "b"]
    dense = again.dense(["0000000000000001"], ["c", "b"])
    np.testing.assert_array_equal(dense.observed, [[False, True]])


Q1, Q2, Q3 = "0000000000000001", "00000000000000a2", "ffffffffffffff03"


def test_details_round_trip(tmp_path):
    store = records.RecordStore(tmp_path / "s", ["a", "b"])
    store.append([Q1, Q2], ["a", "b"], [1.0, 0.0], [0.1, 0.2], choice=[3, -1], letters=[[0.1, 0.2, 0.3, 0.4], [1.0, 0, 0, 0]],
                 in_tokens=[120, 7], out_tokens=[1, -1], wall_s=[0.5, float("nan")], grader="judge:majority")
    store.append([Q3], ["a"], [0.0], [0.3], letters=np.full((1, 10), 0.1))  # details left out: fill values
    rows = records.RecordStore(tmp_path / "s").read()
    np.testing.assert_array_equal(rows["choice"], [3, -1, -1])
    assert rows["letters"].shape == (3, 10) and rows["letters"].dtype == np.float32
    np.testing.assert_allclose(rows["letters"][0, :4], [0.1, 0.2, 0.3, 0.4])
    assert np.isnan(rows["letters"][:2, 4:]).all() and np.allclose(rows["letters"][2], 0.1)
    np.testing.assert_array_equal(rows["in_tokens"], [120, 7, -1])
    np.testing.assert_array_equal(rows["out_tokens"], [1, -1, -1])
    np.testing.assert_array_equal(rows["wall_s"], np.array([0.5, np.nan, np.nan], np.float32))
    assert list(store.grader_names(rows["grader"])) == ["judge:majority", "judge:majority", "gold"]
    np.testing.assert_array_equal(rows["qid"], [Q1, Q2, Q3])


def _strip_details(path):
    """Turn a store into one written by the code before the detail columns existed."""
    for name in ("choice", "letters", "in_tokens", "out_tokens", "wall_s", "grader"):
        shutil.rmtree(path / "columns" / name)
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["graders"]
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("old_rows", [3, records._CHUNK + 5])  # within one chunk, and across two
def test_store_without_detail_columns_reopens_with_fill_values(tmp_path, old_rows):
    path = tmp_path / "s"
    ids = [f"{x:016x}" for x in range(old_rows)]
    records.RecordStore(path, ["a"]).append(ids, ["a"] * old_rows, [1.0] * old_rows, [0.0] * old_rows, choice=[2] * old_rows)
    _strip_details(path)
    store = records.RecordStore(path)
    rows = store.read()
    assert len(rows["choice"]) == old_rows and (rows["choice"] == -1).all() and (rows["grader"] == -1).all()
    assert rows["letters"].shape == (old_rows, 10) and np.isnan(rows["letters"]).all() and np.isnan(rows["wall_s"]).all()
    assert (rows["in_tokens"] == -1).all() and (rows["out_tokens"] == -1).all()
    assert set(store.grader_names(rows["grader"])) == {""}
    store.append([Q1], ["a"], [0.0], [0.1], choice=[9], letters=[[0.5, 0.5]], in_tokens=[10], out_tokens=[2], wall_s=[1.5])
    rows = records.RecordStore(path).read()
    assert len(rows["qid"]) == old_rows + 1 and rows["qid"][-1] == Q1
    assert rows["choice"][-1] == 9 and (rows["choice"][:-1] == -1).all()
    np.testing.assert_array_equal(rows["letters"][-1, :3], [0.5, 0.5, np.nan])
    assert (rows["in_tokens"][-1], rows["out_tokens"][-1], rows["wall_s"][-1]) == (10, 2, 1.5)
    assert list(store.grader_names(rows["grader"][-2:])) == ["", "gold"]


def test_store_missing_a_required_column_is_refused(tmp_path):
    records.RecordStore(tmp_path / "s", ["a"]).append([Q1], ["a"], [1.0], [0.0])
    shutil.rmtree(tmp_path / "s" / "columns" / "cost")
    with pytest.raises(DataError, match="lacks its 'cost' column"):
        records.RecordStore(tmp_path / "s")


@pytest.mark.parametrize("kwargs, msg", [
    (dict(letters=[[0.5] * 11]), r"letters has shape \(1, 11\)"),
    (dict(letters=[0.5, 0.5]), "letters has 2 entries"),
    (dict(letters=[[0.2, 1.5]]), r"letters\[0, 1\] = 1.5 is outside"),
    (dict(letters=np.zeros((1, 10, 1))), "letters has shape"),
    (dict(choice=[10]), "choice 10.0 .* not an integer in -1..9"),
    (dict(choice=[1.5]), "choice 1.5"),
    (dict(choice=[None]), "choice nan"),
    (dict(in_tokens=["many"]), "in_tokens holds a non-number"),
    (dict(in_tokens=[-2]), "in_tokens -2.0"),
    (dict(out_tokens=[float("nan")]), "out_tokens nan"),
    (dict(wall_s=[-0.1]), "wall_s -0.1 .* negative"),
    (dict(wall_s=[1.0, 2.0]), "wall_s has 2 entries for 1 qids"),
    (dict(grader=""), "grader=''"),
])
def test_bad_details_write_nothing(tmp_path, kwargs, msg):
    store = records.RecordStore(tmp_path / "s", ["a"])
    store.append([Q1], ["a"], [1.0], [0.1], choice=[4], grader="first")
    with pytest.raises(DataError, match=msg) as e:
        store.append([Q2], ["a"], [0.0], [0.1], **kwargs)
    assert "\n" not in str(e.value)
    assert store.manifest["graders"] == ["first"] and len(store) == 1
    again = records.RecordStore(tmp_path / "s")
    assert len(again) == 1 and again.manifest["graders"] == ["first"] and again.read()["choice"].tolist() == [4]


def test_add_experts_persists_across_reopen(tmp_path):
    store = records.RecordStore(tmp_path / "s", ["a", "b"])
    store.append([Q1], ["a"], [1.0], [0.1])
    assert store.add_experts(["b", "c", "d", "c"]) == ["a", "b", "c", "d"]
    with pytest.raises(DataError, match="unknown expert 'e'"):
        store.append([Q1], ["e"], [1.0], [0.1])
    store.append([Q2], ["d"], [0.0], [0.1])
    again = records.RecordStore(tmp_path / "s")
    assert again.experts == ["a", "b", "c", "d"] and len(again) == 2
    assert again.add_experts(["a"]) == ["a", "b", "c", "d"]
    dense = again.dense([Q1, Q2], ["d", "a"])
    np.testing.assert_array_equal(dense.observed, [[False, True], [True, False]])
    with pytest.raises(DataError, match="list of non-empty expert names"):
        again.add_experts("e")


def test_done_lists_committed_questions_per_expert(tmp_path):
    store = records.RecordStore(tmp_path / "s", ["a", "b", "c"])
    assert store.done("a") == set()
    store.append([Q1, Q2, Q1], ["a", "a", "b"], [1.0, 0.0, 1.0], [0.1] * 3)
    store.append([Q3], ["a"], [1.0], [0.1])
    assert store.done("a") == {Q1, Q2, Q3} and store.done("b") == {Q1}
    assert store.done("c") == set() and store.done("not-in-store") == set()
    again = records.RecordStore(tmp_path / "s")
    assert again.done("a") == {Q1, Q2, Q3} and again.done("b") == {Q1}
    with pytest.raises(DataError):
        again.append([Q2], ["c"], [1.0], [float("nan")])  # a rejected batch is not done
    assert again.done("c") == set() and records.RecordStore(tmp_path / "s").done("c") == set()


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
                     (i * 1e-6).tolist(), round=int(n // 500), choice=(i % 11 - 1).tolist(), in_tokens=i.tolist(),
                     letters=np.full((500, 4), 0.25), grader="judge")
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
    np.testing.assert_array_equal(rows["choice"], i % 11 - 1)
    np.testing.assert_array_equal(rows["in_tokens"], i)
    assert (rows["letters"][:, :4] == 0.25).all() and np.isnan(rows["letters"][:, 4:]).all()
    assert set(store.grader_names(rows["grader"])) <= {"judge"}
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


def test_every_unpriced_expert_is_named_at_once(tmp_path):
    """An outcomes CSV grading models the pool does not price lists them all in one error and
    writes nothing; with extra_experts=skip their rows are left out."""
    q = "0000000000000001"
    csv_path = tmp_path / "o.csv"
    csv_path.write_text(f"id,model,correct\n{q},a,1\n{q},x,0\n{q},y,1\n{q},x,1\n")
    store = records.RecordStore(tmp_path / "s", ["a", "b"])
    costs = {(q, m): 0.1 for m in "abxy"}
    with pytest.raises(DataError, match=r"grades 2 model\(s\) the pool does not price: 'x', 'y'; .*extra_experts=skip"):
        records.import_outcomes(store, csv_path, costs, {q})
    assert len(records.RecordStore(tmp_path / "s")) == 0
    assert records.import_outcomes(store, csv_path, costs, {q}, skip_unknown_experts=True) == 1
