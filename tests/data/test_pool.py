"""Expert pool: config validation and the per-query cost matrix."""

import math

import numpy as np
import pytest

from leeroo_jax.data.mmlu import make_question
from leeroo_jax.errors import ConfigError
from leeroo_jax.data.pool import Pool
from configs.pools import MMLU_9


def test_default_pool_has_the_nine_priced_models():
    pool = Pool.from_config(MMLU_9)
    assert len(pool) == 9 and pool.index("gpt-4-1106-preview") == 0


def test_cost_is_price_times_tokens():
    q = make_question("anatomy", "x" * 10, ["a", "bb", "c", "d"], 0, "t")
    pool = Pool.from_config(MMLU_9)
    cost = pool.costs([q])
    chars = len("x" * 10 + "\nA. a\nB. bb\nC. c\nD. d")  # 30 characters -> 8 tokens
    tokens = math.ceil(chars / 4)
    assert cost.shape == (1, 9)
    assert cost[0, 0] == pytest.approx((tokens * 10.0 + 30.0) / 1e6)
    assert cost[0, 1] == pytest.approx((tokens + 1) * 0.6 / 1e6)
    assert np.all(cost[0, 2:] == cost[0, 2])


@pytest.mark.parametrize("entries, msg", [
    ([], "no experts"),
    ([dict(name="a", input_price=1, output_price=1), dict(name="a", input_price=1, output_price=1)], "repeat"),
    ([dict(name="a", input_price=-1, output_price=1)], "negative"),
    ([dict(name="a", input_price=1, output_price=1, colour="red")], "unknown keys"),
    ([dict(name="a", input_price=1)], "needs name"),
    ([dict(name="a", input_price=1, output_price=1, backend="flax")], "names no checkpoint"),
    ([dict(input_price=1, output_price=1)], r"pool\[0\] has no name"),
    ([dict(name="", input_price=1, output_price=1)], r"pool\[0\] has no name"),
])
def test_bad_pool_configs(entries, msg):
    with pytest.raises(ConfigError, match=msg):
        Pool.from_config(entries)


def test_unknown_expert_name():
    with pytest.raises(ConfigError, match="unknown expert 'gpt-5'"):
        Pool.from_config(MMLU_9).index("gpt-5")


def test_the_shipped_price_table_is_the_default_pool():
    """configs/custom_pool_prices.csv (the bring-your-own-pool example) holds the 9 list prices."""
    from leeroo_jax.data.pool import read_price_table
    import pathlib
    table = read_price_table(pathlib.Path(__file__).parents[2] / "configs" / "custom_pool_prices.csv")
    assert table == [dict(name=e["name"], input_price=e["input_price"], output_price=e["output_price"]) for e in MMLU_9]


@pytest.mark.parametrize("text, msg", [
    ("model,price\na,1\n", "expected columns model,input_price,output_price"),
    ("model,input_price,output_price\na,1,x\n", "p.csv:2: a price is not a number"),
    ("model,input_price,output_price\na,1,1\nb,-1,1\n", "p.csv:3: needs a model name and prices >= 0"),
    ("model,input_price,output_price\n,1,1\n", "p.csv:2: needs a model name"),
    ("model,input_price,output_price\na,1,1\na,2,2\n", "names repeat (a)"),
    ("model,input_price,output_price\n", "lists no expert"),
])
def test_a_bad_price_table_is_one_line(tmp_path, text, msg):
    from leeroo_jax.data.pool import read_price_table
    (tmp_path / "p.csv").write_text(text)
    with pytest.raises(ConfigError, match=__import__("re").escape(msg)):
        read_price_table(tmp_path / "p.csv")
