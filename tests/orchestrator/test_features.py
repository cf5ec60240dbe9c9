"""Retrieval and subject-prior side features against direct loops, leave-one-out included."""

import numpy as np

from leeroo_jax.orchestrator import features


def _data(seed=0, q=40, e=3, d=5):
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(q, d))
    outcome = (rng.uniform(size=(q, e)) < 0.6).astype(float)
    observed = rng.uniform(size=(q, e)) < 0.8
    train = np.sort(rng.choice(q, 30, replace=False))
    return vecs, outcome, observed, train


def test_neighbour_outcomes_against_a_loop():
    vecs, outcome, observed, train = _data()
    own = np.full(len(vecs), -1)
    own[train] = np.arange(len(train))
    got = features.neighbour_outcomes(vecs, vecs[train], outcome[train], observed[train], (1, 4), self_index=own)
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    glob = (outcome[train] * observed[train]).sum(0) / observed[train].sum(0)
    for i in range(len(vecs)):
        cands = [j for j in train if j != i]  # a TRAIN query never sees itself
        order = sorted(cands, key=lambda j: -unit[i] @ unit[j])
        for slot, k in enumerate((1, 4)):
            nn = order[:k]
            for e in range(outcome.shape[1]):
                obs = [j for j in nn if observed[j, e]]
                want = np.mean([outcome[j, e] for j in obs]) if obs else glob[e]
                assert got[i, slot * 3 + e] == np.float32(want)


def test_subject_prior_leaves_the_query_out():
    _, outcome, observed, train = _data(1)
    subjects = np.array(["a", "b"] * 20)
    own = np.full(len(subjects), -1)
    own[train] = np.arange(len(train))
    got = features.subject_prior(subjects, subjects[train], outcome[train], observed[train], 3.0, self_index=own)
    glob = (outcome[train] * observed[train]).sum(0) / observed[train].sum(0)
    for i in range(len(subjects)):
        rows = [j for j in train if subjects[j] == subjects[i] and j != i]
        n = observed[rows].sum(0)
        h = (outcome[rows] * observed[rows]).sum(0)
        np.testing.assert_allclose(got[i], (h + 3.0 * glob) / (n + 3.0), rtol=1e-6)


def test_nearest_breaks_ties_to_the_lower_index_as_lax_top_k_does():
    """TRAIN holds exact duplicates (MMLU has repeated questions; a short max_length makes many
    more): the search must pick among tied rows the way the server's device search does."""
    import jax

    rng = np.random.default_rng(2)
    train = rng.normal(size=(10, 6))[rng.integers(0, 10, 200)]  # 200 rows, 10 distinct
    queries = rng.normal(size=(30, 6))
    idx, sims = features.nearest(queries, train, 25)
    s = features.unit(queries) @ features.unit(train).T
    for i in range(len(queries)):
        assert list(idx[i]) == sorted(range(200), key=lambda j: (-s[i, j], j))[:25]
    want_sims, want_idx = jax.lax.top_k(s, 25)
    np.testing.assert_array_equal(idx, np.asarray(want_idx))
    np.testing.assert_array_equal(sims, np.asarray(want_sims))
