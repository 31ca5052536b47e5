"""The one loss registry: names, aliases and defaults, and that every surface means the same loss by a name.

Surfaces checked: ``create_loss``/``get_loss`` (module and function), the strategies, the sentence-transformers
adapter and ``negkit demo``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from negkit.cli.demo import DEMO_LOSSES, _objectives
from negkit.integrations.sentence_transformers import NegkitLoss
from negkit.losses import (
    DCL,
    EMC2Loss,
    GlobalContrastiveLoss,
    HardNCE,
    InfoNCE,
    LossSpec,
    SupCon,
    create_loss,
    get_loss,
    info_nce,
    list_losses,
    register_loss,
    unregister_loss,
)
from negkit.strategies import create_strategy, get_strategy, list_strategies
from negkit.strategies.registry import StrategyLoss
from tests.losses.helpers import randint, randn

BUILT_IN = {
    "info_nce": ("infonce", "nt_xent", "ntxent"),
    "symmetric_info_nce": ("simclr", "clip", "symmetric"),
    "sup_con": ("supcon",),
    "dcl": (),
    "dclw": (),
    "hard_nce": ("hardnce",),
    "hucl": (),
    "hscl": (),
    "decoupled_softmax": ("dexml",),
    "mw_auc": ("mw", "mannwhitney", "mann_whitney"),
    "global_contrastive": ("sogclr", "gcl"),
    "emc2": ("mcmc_global_contrastive",),
    "gist": (),
}

#: issue 16's names (no aliases; modules with parameters or clusterings, so not in the generic checks above)
ISSUE_16 = ("soft_top_k", "meow", "adameow", "amcl", "metrix", "tcm")
#: issue 17's SigLIP (a module with a learnable scale and bias: tests/losses/test_siglip.py checks its name)
ISSUE_17 = ("siglip",)

#: Which registered loss each strategy trains (the strategy's parameters shared with it take its defaults).
STRATEGY_LOSS = {
    "simclr": "symmetric_info_nce",
    "scl": "symmetric_info_nce",
    "dcl": "dcl",
    "hucl": "hucl",
    "supcon": "sup_con",
    "hscl": "hscl",
    "uniform-k": "info_nce",
    "class-k": "info_nce",
    "hard-k": "info_nce",
    "mined-k": "info_nce",
    "queue": "info_nce",
    "moco": "info_nce",
    "ans": "info_nce",
    "sogclr": "global_contrastive",
    "emc2": "emc2",
    "meow": "meow",
    "adameow": "adameow",
    "amcl": "amcl",
    "metrix": "metrix",
    "tcm": "sup_con",  # the base strategy's loss (supcon by default) plus the regulariser
}

B, D = 6, 5
Z1, Z2, Y = randn(0, B, D), randn(1, B, D), randint(2, 3, B)


def inputs(name: str) -> tuple[Tensor, ...]:
    """Inputs of the built-in loss ``name`` (the positional arguments of its function and module)."""
    relevance = (Y.unsqueeze(0) == Y.unsqueeze(1)).double()
    return {
        "info_nce": (Z1, Z2),
        "symmetric_info_nce": (Z1, Z2),
        "sup_con": (torch.cat([Z1, Z2]), torch.cat([Y, Y])),
        "dcl": (Z1, Z2),
        "dclw": (Z1, Z2),
        "hard_nce": (Z1, Z2),
        "hucl": (Z1, Z2),
        "hscl": (Z1, Z2, Y),
        "decoupled_softmax": (Z1, Z2, relevance),
        "mw_auc": (Z1 @ Z2.T, relevance),
        "emc2": (Z1, Z2, randn(3, B, 4, D)),
        "gist": (Z1, Z2, Z1, Z2),  # the guide: the same embeddings
    }[name]


# ------------------------------------------------------------------------------------------- names and aliases


def test_the_built_in_names_and_aliases():
    assert set(BUILT_IN) <= set(list_losses())
    for name, aliases in BUILT_IN.items():
        spec = get_loss(name)
        assert isinstance(spec, LossSpec) and spec.name == name and spec.description
        assert set(aliases) <= set(spec.aliases), name
        for alias in aliases:
            assert get_loss(alias) is spec, alias
            assert alias in list_losses(aliases=True) and alias not in list_losses()


def test_names_are_case_insensitive_and_dash_is_underscore():
    assert get_loss("InfoNCE") is get_loss("NT-Xent") is get_loss(" nt_xent ") is get_loss("info_nce")
    assert get_loss("SimCLR") is get_loss("symmetric-info-nce") is get_loss("CLIP")
    assert get_loss("Sup-Con") is get_loss("SUPCON") is get_loss("sup_con")
    assert list_losses("H*") == ["hard_nce", "hscl", "hucl"]
    assert list_losses("h*", aliases=True) == ["hard_nce", "hardnce", "hscl", "hucl"]


def test_create_loss_info_nce_works_and_equals_the_function():
    module = create_loss("info_nce")
    assert isinstance(module, InfoNCE) and module.temperature == 0.1 and not module.symmetric
    torch.testing.assert_close(module(Z1, Z2), info_nce(Z1, Z2), rtol=0, atol=0)
    assert create_loss("info_nce", temperature=0.2).temperature == 0.2


def test_one_meaning_per_name():
    # simclr is the symmetric InfoNCE, as the simclr strategy; dclw is weighted; hucl/hscl are the strategies'.
    assert create_loss("simclr").symmetric and get_loss("simclr").name == "symmetric_info_nce"
    assert (
        isinstance(create_loss("dclw"), DCL) and create_loss("dclw").sigma == 0.5 and create_loss("dcl").sigma is None
    )
    hucl = create_loss("hucl")
    assert isinstance(hucl, HardNCE) and (hucl.temperature, hucl.beta, hucl.tau_plus) == (0.1, 0.5, 0.0)
    assert (create_loss("hscl").temperature, create_loss("hscl").beta) == (0.1, 0.5)
    hard = create_loss("hard_nce")  # the function's and module's own defaults: the papers' T = 0.5, β = 1
    assert (hard.temperature, hard.beta) == (HardNCE().temperature, HardNCE().beta) == (0.5, 1.0)
    assert isinstance(create_loss("supcon"), SupCon) and isinstance(create_loss("emc2"), EMC2Loss)


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_module_and_function_of_a_name_share_its_defaults(name):
    spec = get_loss(name)
    if name == "global_contrastive":  # stateful: module only, and it needs the dataset size
        assert spec.function is None and spec.required() == ("num_samples",)
        module = create_loss(name, num_samples=10)
        assert isinstance(module, GlobalContrastiveLoss)
        assert (module.temperature, module.gamma) == (spec.defaults["temperature"], spec.defaults["gamma"])
        return
    module = create_loss(name)
    for key, value in spec.defaults.items():
        assert getattr(module, key) == value, (name, key)
    assert dict(module.state_dict()) == {}, name  # no hidden state
    args = inputs(name)
    torch.testing.assert_close(module(*args), spec.bind()(*args), rtol=0, atol=0)
    torch.testing.assert_close(module(*args), spec.function(*args, **spec.defaults), rtol=0, atol=0)


def test_defaults_are_read_only():
    with pytest.raises(TypeError):
        get_loss("hucl").defaults["beta"] = 2.0  # type: ignore[index]


# ---------------------------------------------------------------------------------------------------- errors


def test_a_misspelt_name_errors_with_the_valid_names_and_a_suggestion():
    with pytest.raises(ValueError, match=r"unknown loss 'infonse'; registered: .*info_nce.*did you mean 'info_nce'"):
        create_loss("infonse")
    with pytest.raises(ValueError, match="did you mean 'sup_con'"):
        get_loss("sup-conn")
    with pytest.raises(ValueError, match="did you mean 'symmetric_info_nce'"):
        get_loss("simclrr")  # an alias's misspelling suggests its canonical name
    with pytest.raises(ValueError, match=r"unknown loss 'triplet'; registered: (.*, )?dcl, dclw, .*emc2.*$"):
        get_loss("triplet")
    with pytest.raises(ValueError, match="must be a string"):
        get_loss(3)  # type: ignore[arg-type]


def test_bad_parameters_are_refused_when_the_loss_is_built():
    with pytest.raises(ValueError, match=r"loss 'hucl' takes no parameter 'margin'; it takes beta, "):
        create_loss("hucl", margin=0.1)
    with pytest.raises(ValueError, match=r"loss 'global_contrastive' needs num_samples"):
        create_loss("sogclr")
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        create_loss("info_nce", temperature=0.0)
    with pytest.raises(ValueError, match="takes no parameter 'margin'"):
        get_loss("dcl").bind(margin=1.0)
    with pytest.raises(ValueError, match="keeps state between calls"):
        get_loss("sogclr").bind()


def test_a_name_cannot_be_taken_twice():
    with pytest.raises(ValueError, match="'supcon' is already registered to 'sup_con'"):
        register_loss("supcon", module=SupCon)
    with pytest.raises(ValueError, match="'nt_xent' is already registered to 'info_nce'"):
        register_loss("fresh", module=InfoNCE, aliases=("NT-Xent",))
    assert "fresh" not in list_losses()
    with pytest.raises(ValueError, match="its module takes no parameter 'margin'"):
        register_loss("fresh", module=InfoNCE, defaults={"margin": 1.0})
    with pytest.raises(ValueError, match="give its function, its module class, or both"):
        register_loss("fresh")
    assert "fresh" not in list_losses(aliases=True)


# ------------------------------------------------------------------------------------------ a new loss, by name


def margin_loss(anchor: Tensor, positive: Tensor, *, margin: float = 1.0, reduction: str = "mean") -> Tensor:
    """Test loss: ``relu(margin − cos(a_i, p_i))`` per anchor (no negatives)."""
    per_anchor = torch.relu(margin - torch.nn.functional.cosine_similarity(anchor, positive, dim=1))
    return per_anchor.mean() if reduction == "mean" else per_anchor


@pytest.fixture
def registered():
    spec = register_loss(
        "Test-Margin", function=margin_loss, defaults={"margin": 0.5}, aliases=("tm",), description="test"
    )
    try:
        yield spec
    finally:
        unregister_loss("test_margin")


def test_a_loss_registered_from_a_test_module_is_available_by_name(registered):
    assert registered.name == "test_margin" and get_loss("TM") is registered
    assert "test_margin" in list_losses() and "tm" in list_losses(aliases=True)
    module = create_loss("test-margin")
    assert isinstance(module, nn.Module) and module.params == {"margin": 0.5}
    expected = margin_loss(Z1, Z2, margin=0.5)
    torch.testing.assert_close(module(Z1, Z2), expected, rtol=0, atol=0)
    torch.testing.assert_close(create_loss("tm", margin=2.0)(Z1, Z2), margin_loss(Z1, Z2, margin=2.0))
    torch.testing.assert_close(registered.bind()(Z1, Z2), expected)
    with pytest.raises(ValueError, match="takes no parameter 'temperature'; it takes margin, reduction"):
        create_loss("tm", temperature=0.1)


def test_a_module_class_registers_too_and_unregistering_frees_every_name():
    class Scaled(InfoNCE):
        pass

    spec = register_loss("scaled_nce", module=Scaled, defaults={"temperature": 0.3}, aliases=("snce",))
    try:
        assert spec.function is None and isinstance(create_loss("SNCE"), Scaled)
        assert create_loss("scaled_nce").temperature == 0.3
    finally:
        unregister_loss("snce")
    for name in ("scaled_nce", "snce"):
        with pytest.raises(ValueError, match="unknown loss"):
            get_loss(name)


# --------------------------------------------------------------------------------- the same name on every surface


def test_every_strategy_takes_its_loss_defaults():
    assert set(STRATEGY_LOSS) == set(loss_strategies())
    for strategy, loss in STRATEGY_LOSS.items():
        strategy_defaults, loss_defaults = get_strategy(strategy).defaults(), get_loss(loss).defaults
        shared = set(strategy_defaults) & set(loss_defaults)
        assert "temperature" in shared or ("temperature" not in loss_defaults and shared), strategy  # amcl: none
        for key in shared:
            assert strategy_defaults[key] == loss_defaults[key], (strategy, key)


def loss_strategies() -> list[str]:
    """The registered strategies that are loss modules (every one must name the loss it trains above)."""
    return [name for name in list_strategies() if issubclass(get_strategy(name).factory, StrategyLoss)]


@pytest.mark.parametrize(
    ("strategy", "loss", "call"),
    [
        ("simclr", "simclr", lambda f: f(Z1, Z2)),
        ("scl", "symmetric_info_nce", lambda f: f(Z1, Z2, labels=Y)),
        ("dcl", "dcl", lambda f: f(Z1, Z2)),
        ("hucl", "hucl", lambda f: f(Z1, Z2)),
        ("supcon", "supcon", lambda f: f(torch.cat([Z1, Z2]), torch.cat([Y, Y]))),
        ("hscl", "hscl", lambda f: f(Z1, Z2, Y)),
    ],
)
def test_an_in_batch_strategy_is_its_named_loss(strategy, loss, call):
    # Bit for bit: the strategy calls the registry's module, so the built-in runs train the registry's loss.
    value = create_strategy(strategy)(Z1, Z2, Y, torch.arange(B))
    torch.testing.assert_close(value, call(create_loss(loss)), rtol=0, atol=0)
    torch.testing.assert_close(value, call(get_loss(loss).bind()), rtol=0, atol=0)


def test_the_sentence_transformers_adapter_resolves_names_through_the_registry():
    model = nn.Identity()
    for name in ("info_nce", "InfoNCE", "nt-xent", "symmetric_info_nce", "simclr", "decoupled_softmax", "dexml"):
        adapter = NegkitLoss(model, name)
        spec = get_loss(name)
        assert adapter.loss_name == spec.name
        assert adapter.temperature == spec.defaults["temperature"], name
        assert adapter.symmetric == spec.defaults.get("symmetric", False), name
    # mw_auc has no temperature of its own; the adapter scales its scores with info_nce's
    assert NegkitLoss(model, "mw").temperature == get_loss("info_nce").defaults["temperature"]
    # the same loss as create_loss(name) on the same two columns
    for name in ("info_nce", "simclr"):
        adapter = NegkitLoss(model, name)
        torch.testing.assert_close(adapter.compute_loss_from_embeddings([Z1, Z2]), create_loss(name)(Z1, Z2))
    adapter = NegkitLoss(model, "decoupled_softmax")
    torch.testing.assert_close(
        adapter.compute_loss_from_embeddings([Z1, Z2]), create_loss("decoupled_softmax")(Z1, Z2, torch.eye(B))
    )


def test_the_adapter_explains_names_it_cannot_use():
    with pytest.raises(ValueError, match=r"unknown loss 'infonse'; choose one of \[.*\(did you mean 'info_nce'\?\)"):
        NegkitLoss(nn.Identity(), "infonse")
    with pytest.raises(ValueError, match=r"loss 'supcon' \(sup_con\) does not take .* columns"):
        NegkitLoss(nn.Identity(), "supcon")


def test_the_demo_builds_every_row_by_name_with_its_defaults():
    objectives = _objectives()
    assert list(objectives) == [label for label, _, _ in DEMO_LOSSES]
    for (label, name, _), objective in zip(DEMO_LOSSES, objectives.values(), strict=True):
        assert isinstance(objective, functools.partial), label
        module, spec = objective.args[0], get_loss(name)
        assert isinstance(module, spec.module), label
        for key, value in spec.defaults.items():
            assert getattr(module, key) == value, (label, key)
        value = objective(Z1.float(), Z2.float(), Y)
        assert value.dim() == 0 and torch.isfinite(value), label


def test_the_readme_table_lists_every_name_with_its_aliases():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Loss names", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = {alias.strip(" `") for alias in cells[1].split(",") if alias.strip()}
    assert set(rows) == set(BUILT_IN) | set(ISSUE_16) | set(ISSUE_17)  # one table for every name
    for name, aliases in rows.items():
        assert aliases == set(get_loss(name).aliases), name


def test_a_function_only_loss_module_counts_skipped_anchors():
    spec = register_loss("test_pairs", function=info_nce, defaults={"temperature": 0.2})
    try:
        module = create_loss("test_pairs")
        a, p = randn(0, 3, 4), randn(1, 3, 4)
        assert module(a, p).item() > 0 and module.skipped_anchors == 0
        assert module(a[:1], p[:1]).item() == 0.0 and module.skipped_anchors == 1
        assert spec.module is type(module)
    finally:
        unregister_loss("test_pairs")
