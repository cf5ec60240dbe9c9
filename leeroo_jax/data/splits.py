"""The project's fixed split of questions, a function of the question id alone.

TEST when int(id, 16) % 10 is 0-2, VAL when 3, TRAIN otherwise. Because nothing but the id
decides, adding an expert (with outcomes on any subset, or none yet) never moves a question
between splits, and every pool, run and process agrees on them. Which questions a split can
*evaluate* a pool on (every pool expert graded) is the dataset's business (dataset.py).
"""

from __future__ import annotations

import enum
from typing import Sequence

import numpy as np


class Split(enum.Enum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


def split_of(qid: str) -> Split:
    r = int(qid, 16) % 10
    if r <= 2:
        return Split.TEST
    if r == 3:
        return Split.VAL
    return Split.TRAIN


def split_array(qids: Sequence[str]) -> np.ndarray:
    """[Q] of split names ("train" / "val" / "test")."""
    return np.array([split_of(q).value for q in qids], dtype="U5")
