"""sample_unobserved: uniform over each row's unobserved columns, never an observed one."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from negkit.negatives import sample_unobserved


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 6), columns=st.integers(2, 30), k=st.integers(1, 20), seed=st.integers(0, 10_000))
def test_never_returns_an_observed_column(rows, columns, k, seed):
    generator = torch.Generator().manual_seed(seed)
    observed = torch.rand(rows, columns, generator=generator) < 0.6
    observed[:, torch.randint(columns, (1,), generator=generator)] = False  # every row keeps one free column
    users = torch.randint(rows, (8,), generator=generator)
    drawn = sample_unobserved(users, observed, k, generator)
    assert drawn.shape == (8, k) and drawn.dtype == torch.long
    assert not observed[users.unsqueeze(1), drawn].any()


def test_the_distribution_is_uniform_over_the_free_columns():
    observed = torch.tensor([[True, False, True, False, False, True, False, True]])
    free = (~observed[0]).nonzero().squeeze(1)
    drawn = sample_unobserved(torch.zeros(20_000, dtype=torch.long), observed, 4, torch.Generator().manual_seed(0))
    shares = torch.bincount(drawn.flatten(), minlength=8).double() / drawn.numel()
    assert torch.all(shares[observed[0]] == 0)
    total_variation = 0.5 * (shares[free] - 1 / len(free)).abs().sum()
    assert total_variation < 0.01


def test_bad_input_is_a_clear_error():
    observed = torch.zeros(3, 5, dtype=torch.bool)
    observed[1] = True
    with pytest.raises(ValueError, match="row 1 has no unobserved column"):
        sample_unobserved(torch.tensor([0, 1]), observed, 2)
    with pytest.raises(ValueError, match="k must be >= 1"):
        sample_unobserved(torch.tensor([0]), observed, 0)
    with pytest.raises(ValueError, match="2-D bool"):
        sample_unobserved(torch.tensor([0]), observed.float(), 1)
    with pytest.raises(ValueError, match="rows must hold integer ids"):
        sample_unobserved(torch.tensor([0.0]), observed, 1)
