import pytest
import torch

from edgeprune.errors import UserError
from edgeprune.models import MODELS, build_model, default_config

META = {
    "cnn": {
        "task": "image",
        "dataset": "fashion-mnist",
        "input_shape": ["batch", 1, 28, 28],
        "labels": list("0123456789"),
    },
    "bilstm": {"task": "text", "dataset": "sst2", "labels": ["neg", "pos"], "vocab_size": 20000},
}
META["resnet20"] = META["resnet56"] = {**META["cnn"], "dataset": "cifar10", "input_shape": ["batch", 3, 32, 32]}


def example_input(name, batch=3):
    if META[name]["task"] == "image":
        return torch.randn(batch, *META[name]["input_shape"][1:])
    return torch.randint(0, 100, (batch, 11))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_builds_runs_and_round_trips(name):
    model = build_model({"name": name, "config": default_config(name, META[name])})
    out = model(example_input(name))
    assert out.shape[0] == 3 and torch.isfinite(out).all()
    rebuilt = build_model(model.arch())
    rebuilt.load_state_dict(model.state_dict())
    x = example_input(name)
    torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)
    if hasattr(model, "arch_with_widths"):  # models with declared pruning groups (the resnets are traced)
        assert build_model(model.arch_with_widths(model.widths())).arch() == model.arch()


def test_seed_cnn_has_the_study_parameter_count():
    model = build_model({"name": "cnn", "config": default_config("cnn", META["cnn"])})
    assert sum(p.numel() for p in model.parameters()) == 421_642
    assert model.widths() == {"conv0": 32, "conv1": 64, "fc0": 128}


def test_bilstm_defaults_follow_the_study():
    cfg = default_config("bilstm", META["bilstm"])
    assert cfg == {
        "vocab_size": 20000,
        "embed_dim": 128,
        "hidden": [[128, 128]],
        "num_outputs": 1,
        "source_vocab": 20000,  # the token map that makes vocabulary rows prunable
    }


def test_mismatched_model_and_dataset():
    with pytest.raises(UserError, match="use --model cnn"):
        default_config("bilstm", META["cnn"])
    with pytest.raises(UserError, match="Unknown model"):
        build_model({"name": "resnet", "config": {}})
