"""Model strings name budgets (RouteLLM's `router-mf-0.116` convention)."""

import pytest

from leeroo_jax.serving import budgets
from leeroo_jax.serving.budgets import BadBudget, BudgetSpec


@pytest.mark.parametrize("model, kind, value", [
    ("leeroo-cap-0.0002", "cap", 2e-4), ("leeroo-lambda-0.5", "lambda", 0.5), ("leeroo-quality-0.8", "quality", 0.8),
    ("leeroo-cost1k-1.0", "cost1k", 1.0), ("cap-1e-4", "cap", 1e-4), (" leeroo-lambda-0 ", "lambda", 0.0),
])
def test_model_strings_name_budgets(model, kind, value):
    spec = budgets.parse(model)
    assert spec == BudgetSpec(kind, value)
    assert budgets.parse(spec.model_id) == spec  # the id a response reports parses back


@pytest.mark.parametrize("model, says", [
    ("gpt-4", "unknown model 'gpt-4'"), ("leeroo-tau-0.5", "unknown model"), ("leeroo-cap-", "unknown model"),
    ("leeroo-cap-cheap", "'cheap' is not a number"), ("leeroo-lambda--1", ">= 0"), ("leeroo-cap-nan", "finite"),
    ("leeroo-quality-1.5", "[0, 1]"), ("leeroo-cost1k-inf", "finite"),
])
def test_a_bad_model_string_is_one_line_naming_the_valid_forms(model, says):
    with pytest.raises(BadBudget) as e:
        budgets.parse(model)
    msg = str(e.value)
    assert says in msg and "\n" not in msg
    if "unknown model" in says or "not a number" in says:
        assert all(form in msg for form in budgets.FORMS)
