import pytest
import torch

from negkit.losses import DCL, HardNCE, InfoNCE, SupCon, create_loss, list_losses, register_loss


def test_names_resolve_to_modules_with_overrides():
    assert isinstance(create_loss("InfoNCE", temperature=0.2), InfoNCE)
    assert create_loss("simclr").temperature == 0.1
    assert isinstance(create_loss("supcon"), SupCon)
    assert create_loss("dclw", sigma=0.5).sigma == 0.5 and isinstance(create_loss("dcl"), DCL)
    assert isinstance(create_loss("hscl", beta=5.0), HardNCE)
    assert list_losses("h*") == ["hardnce", "hscl", "hucl"]
    assert {"infonce", "supcon", "dcl", "hardnce", "decoupled_softmax", "mw_auc"} <= set(list_losses())


def test_a_name_cannot_be_taken_twice():
    with pytest.raises(ValueError, match="already registered"):

        @register_loss("supcon")
        class Other(torch.nn.Module):
            pass


def test_modules_have_no_hidden_state():
    # Losses without running estimators hold no parameters or buffers: state_dict is empty.
    for name in list_losses():
        module = create_loss(name)
        assert dict(module.state_dict()) == {}, name
