"""Bring your own pool: a CSV of graded answers and a price table, no Python to write.

    python -m leeroo_jax.train --config=configs/custom_pool.py:my_outcomes.csv,my_prices.csv

my_outcomes.csv, one graded answer a row:    id,model,correct[,prob]
    id       the question's 16-hex id, leeroo_jax.data.mmlu.question_id(question, choices),
             of a question in config.data.source (default: the vendored MMLU test split)
    model    the expert's name, exactly as in the price table
    correct  1 or 0 (any grade in [0, 1]); prob (optional) the expert's probability of the gold answer
my_prices.csv, one expert a row:             model,input_price,output_price   (USD per 1M tokens)

Every model the outcomes CSV grades needs a price (the job names all that lack one, and
stops); a priced model the CSV never grades is warned about (it may be graded later, by
probes or self-play) and left out of evaluation. weak / strong (the
pair APGR, CPT and the report's budgets refer to) default to the cheapest and the dearest
expert; set --config.eval.weak / strong to choose. As shipped (no argument) it runs the
vendored outcomes with this directory's custom_pool_prices.csv: the 9 experts' list prices.
"""

import pathlib

from configs import base
from leeroo_jax.data.pool import read_price_table

HERE = pathlib.Path(__file__).parent


def get_config(files: str | None = None):
    parts = files.split(",") if files else ["vendored", str(HERE / "custom_pool_prices.csv")]
    if len(parts) != 2:
        raise ValueError(f"configs/custom_pool.py takes OUTCOMES.csv,PRICES.csv after the colon, not {files!r}")
    outcomes, prices = parts
    c = base.get_config()
    c.run_name = "custom_pool"
    c.data.outcomes = outcomes
    c.pool = read_price_table(prices)
    by_price = sorted(c.pool, key=lambda e: e["input_price"] + e["output_price"])  # stable: the first of equals
    c.eval.weak, c.eval.strong = by_price[0]["name"], by_price[-1]["name"]
    return c
