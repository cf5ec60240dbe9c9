"""The judge's weighted majority against exact enumeration of every way independent voters can vote."""

import itertools

import numpy as np
import pytest

from leeroo_jax.experts.judge import weight, weighted_majority


def _success(rule, accs, n):
    """P(rule names the true option 0) when voter i is right with prob accs[i] and otherwise
    picks one of the n - 1 wrong options uniformly: exact, by enumerating all n^V vote tuples."""
    total = 0.0
    for votes in itertools.product(range(n), repeat=len(accs)):
        p = np.prod([a if v == 0 else (1 - a) / (n - 1) for v, a in zip(votes, accs)])
        total += p * (rule(votes, accs) == 0)
    return total


def _weighted(votes, accs, n=4):
    return weighted_majority(list(zip(votes, accs)), n)


def _plain(votes, accs, n=4):
    return weighted_majority([(v, 0.9) for v in votes], n)  # equal weights: plurality


def _best_single(votes, accs):
    return votes[int(np.argmax(accs))]


def _map(votes, accs, n=4):
    """The Bayes-optimal decision (uniform prior over the true option), by direct likelihood."""
    like = [np.prod([a if v == t else (1 - a) / (n - 1) for v, a in zip(votes, accs)]) for t in range(n)]
    best = max(like)
    return like.index(best) if like.count(best) == 1 else -1


@pytest.mark.parametrize("accs", [(0.9, 0.6, 0.6), (0.7, 0.7, 0.7), (0.8, 0.5, 0.4, 0.6), (0.55, 0.3, 0.95)])
def test_weighted_majority_is_the_bayes_decision_and_beats_plurality_and_the_best_voter(accs):
    n = 4
    weighted = _success(lambda v, a: _weighted(v, a, n), accs, n)
    assert weighted == pytest.approx(_success(lambda v, a: _map(v, a, n), accs, n), abs=1e-12)
    assert weighted >= _success(lambda v, a: _plain(v, a, n), accs, n) - 1e-12
    assert weighted >= _success(_best_single, accs, n) - 1e-12


def test_a_voter_at_chance_or_worse_weighs_nothing_and_ties_are_not_judged():
    assert weight(0.25, 4) == pytest.approx(0.0, abs=1e-9) and weight(0.1, 4) == 0.0
    assert weight(0.9, 4) == pytest.approx(np.log(3 * 0.9 / 0.1))
    assert weighted_majority([(1, 0.7), (2, 0.7)], 4) == -1  # tie
    assert weighted_majority([(1, 0.2), (-1, 0.9)], 4) == -1  # no positive weight on a valid option
    assert weighted_majority([(3, 0.6), (3, 0.6), (0, 0.9)], 4) == 0  # log(27) > 2 x log(4.5)
    assert weighted_majority([(3, 0.6), (3, 0.6), (0, 0.8)], 4) == 3  # 2 x log(4.5) > log(12)
