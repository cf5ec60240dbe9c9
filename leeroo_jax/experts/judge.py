"""Grades for questions with no known answer (generated ones): a reliability-weighted majority.

Each voter (a called expert, and optionally the question's generator with its claimed answer)
names an option; a voter of accuracy a on n options weighs log((n - 1) a / (1 - a)), the
weight that maximises the chance a plurality of independent voters is right when a wrong voter
picks among the other options at random (Nitzan & Paroush, 1982): a voter at chance (a = 1/n)
weighs 0, a worse one is ignored. The judged answer is the option of largest total weight;
with no positive weight, or a tie, the question is not judged (and nothing is recorded).
"""

from __future__ import annotations

import math
from typing import Sequence


def weight(accuracy: float, n_options: int) -> float:
    a = min(max(accuracy, 1e-3), 1 - 1e-3)
    return max(0.0, math.log((n_options - 1) * a / (1 - a)))


def weighted_majority(votes: Sequence[tuple[int, float]], n_options: int) -> int:
    """votes: (option index, or -1 for no answer; voter accuracy). The judged option, or -1."""
    total = [0.0] * n_options
    for choice, acc in votes:
        if 0 <= choice < n_options:
            total[choice] += weight(acc, n_options)
    best = max(total)
    if best <= 0 or total.count(best) > 1:
        return -1
    return total.index(best)
