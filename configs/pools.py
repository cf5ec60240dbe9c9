"""Expert pools, declared as data. Prices: public 2024 list prices, USD per 1M tokens
(OpenAI for GPT-4; a typical 2024 open-model host for the rest), from the data README."""

_OPEN_7B = 0.20

MMLU_9 = (
    dict(name="gpt-4-1106-preview", input_price=10.00, output_price=30.00),
    dict(name="mistralai/Mixtral-8x7B-Instruct-v0.1", input_price=0.60, output_price=0.60),
    dict(name="meta-llama/Meta-Llama-3-8B", input_price=_OPEN_7B, output_price=_OPEN_7B),
    dict(name="mistralai/Mistral-7B-v0.1", input_price=_OPEN_7B, output_price=_OPEN_7B),
    dict(name="cognitivecomputations/dolphin-2.6-mistral-7b", input_price=_OPEN_7B, output_price=_OPEN_7B),
    dict(name="meta-math/MetaMath-Mistral-7B", input_price=_OPEN_7B, output_price=_OPEN_7B),
    dict(name="HuggingFaceH4/zephyr-7b-beta", input_price=_OPEN_7B, output_price=_OPEN_7B),
    dict(name="cognitivecomputations/dolphin-2.9-llama3-8b", input_price=_OPEN_7B, output_price=_OPEN_7B),
    dict(name="itpossible/Chinese-Mistral-7B-v0.1", input_price=_OPEN_7B, output_price=_OPEN_7B),
)

GPT4, MIXTRAL = MMLU_9[0]["name"], MMLU_9[1]["name"]
OPEN_7 = MMLU_9[2:]  # the seven 7-8B open models: one list price, so every query costs the same on each


def repriced(pool, name: str, factor: float):
    """`pool` with expert `name`'s prices multiplied by `factor` (a what-if price table)."""
    return tuple(dict(e, input_price=e["input_price"] * factor, output_price=e["output_price"] * factor)
                 if e["name"] == name else dict(e) for e in pool)


# Live experts: models this project runs (experts/live.py), the real SmolLM2-135M-Instruct
# weights fetched by `make setup`. A 135M model has no list price; $0.10 per 1M tokens is an
# assumption (the lowest 2024 per-token tier of hosted small models), stated in the README.
_SMOL = 0.10
SMOLLM2_LIVE = (
    dict(name="smollm2-135m-0shot", input_price=_SMOL, output_price=_SMOL, backend="flax", checkpoint="smollm2",
         recipe="mmlu_0shot"),
    dict(name="smollm2-135m-5shot", input_price=_SMOL, output_price=_SMOL, backend="flax", checkpoint="smollm2",
         recipe="mmlu_5shot"),
)
