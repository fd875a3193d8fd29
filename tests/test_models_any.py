"""Any model through --model: the CIFAR ResNets, torchvision:NAME, path/to/file.py:factory; the fit
check against the data; loading a pruned state dict into a model built from its original config."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeprune.config import resolve_train_config
from edgeprune.errors import UserError
from edgeprune.models import build_model, check_model_fits, default_config, parse_model_kwargs
from edgeprune.prune.surgery import compact_, load_resized
from edgeprune.prune.trace import trace_groups

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def image_meta(c=3, size=32, classes=10, dataset="cifar10"):
    return {
        "task": "image",
        "dataset": dataset,
        "input_shape": ["batch", c, size, size],
        "labels": [str(i) for i in range(classes)],
    }


def text_meta(classes=2, vocab=50, max_len=12):
    return {
        "task": "text",
        "dataset": "sst2",
        "input_shape": ["batch", "seq"],
        "labels": [str(i) for i in range(classes)],
        "vocab_size": vocab,
        "max_len": max_len,
    }


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


# --- resnet20 / resnet56 ---------------------------------------------------------------------------


def cifar_resnet_params(n: int, c: int, k: int, w: int = 16) -> int:
    """He et al.'s ResNet-(6n+2), option B, counted by layer: 3x3 convs without bias, BatchNorm (2 per
    channel), a 1x1 conv + BN projection where a stage widens, a Linear classifier."""
    total = 9 * c * w + 2 * w  # stem
    cin = w
    for width in (w, 2 * w, 4 * w):
        total += 9 * cin * width + 9 * width * width + 4 * width  # the stage's first block
        if cin != width:
            total += cin * width + 2 * width  # its projection shortcut
        total += (n - 1) * (18 * width * width + 4 * width)  # the other blocks
        cin = width
    return total + 4 * w * k + k


@pytest.mark.parametrize("name,n,known", [("resnet20", 3, 272_474), ("resnet56", 9, 855_770)])
@pytest.mark.parametrize("channels", [1, 3])
def test_cifar_resnet_parameter_counts(name, n, known, channels):
    model = build_model({"name": name, "config": default_config(name, image_meta(channels))})
    assert count(model) == cifar_resnet_params(n, channels, 10)
    if channels == 3:
        assert count(model) == known  # ResNet-20: the paper's 0.27M
    assert model.arch() == {"name": name, "config": {"in_channels": channels, "num_classes": 10, "width": 16}}
    rebuilt = build_model(model.arch())
    rebuilt.load_state_dict(model.state_dict())


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32])
def test_resnet20_runs_on_small_images(channels, size):
    meta = image_meta(channels, size)
    model = build_model({"name": "resnet20", "config": default_config("resnet20", meta)})
    check_model_fits(model, meta)
    out = model(torch.randn(3, channels, size, size))
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    assert model.widths()["layer3.0.shortcut.0"] == 64


def test_resnet_declares_no_pruning_groups():
    from edgeprune.prune.groups import GROUP_BUILDERS

    assert not {"resnet20", "resnet56"} & set(GROUP_BUILDERS)


# --- torchvision:NAME and path/to/file.py:factory --------------------------------------------------


def test_torchvision_model_takes_its_class_count_from_the_data():
    meta = image_meta(classes=7)
    config = default_config("torchvision:resnet18", meta)
    assert config == {"num_classes": 7}
    model = build_model({"name": "torchvision:resnet18", "config": config})
    assert model.fc.out_features == 7
    check_model_fits(model, meta)


def test_torchvision_errors():
    with pytest.raises(UserError, match=r"close: resnet18.*list_models\(module=torchvision.models\)"):
        default_config("torchvision:resnet19", image_meta())
    with pytest.raises(UserError, match="is an image model but sst2 is text data"):
        default_config("torchvision:resnet18", text_meta())
    with pytest.raises(UserError, match="never downloads weights"):
        build_model({"name": "torchvision:resnet18", "config": {"weights": "DEFAULT"}})
    with pytest.raises(UserError, match="fix --model-kwargs"):
        build_model({"name": "torchvision:resnet18", "config": {"no_such_option": 1}})


FACTORY = """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, num_classes, hidden):
            super().__init__()
            self.conv = nn.Conv2d(3, hidden, 3, padding=1)
            self.fc = nn.Linear(hidden, num_classes)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

    def make(num_classes, hidden=8):
        return Net(num_classes, hidden)

    def make_text(num_outputs=1):
        return nn.Sequential(nn.Embedding(50, 8), nn.Flatten(), nn.Linear(8 * 12, num_outputs))

    def not_a_model():
        return [1, 2]

    def fails(**kw):
        raise ValueError("no such width")

    WIDTH = 3
"""


@pytest.fixture
def factory(tmp_path) -> Path:
    path = tmp_path / "my_models.py"
    path.write_text(textwrap.dedent(FACTORY))
    return path


def test_file_factory_builds_with_the_class_count_from_the_data(factory):
    name = f"{factory}:make"
    meta = image_meta(classes=5)
    assert default_config(name, meta) == {"num_classes": 5}
    model = build_model({"name": name, "config": {**default_config(name, meta), "hidden": 4}})
    assert model.fc.out_features == 5 and model.conv.out_channels == 4
    check_model_fits(model, meta)
    # a factory without num_classes decides alone; text data works as well (one sigmoid logit)
    text = f"{factory}:make_text"
    assert default_config(text, text_meta()) == {}
    check_model_fits(build_model({"name": text, "config": {}}), text_meta())


def test_file_factory_errors(factory, tmp_path):
    meta = image_meta()
    cases = {
        f"{tmp_path}/missing.py:make": "does not exist",
        f"{factory}": "names a file but no factory function",
        f"{factory}:nope": r"has no function 'nope' \(it defines Net, fails, make",
        f"{factory}:WIDTH": "is an int, not a function",
    }
    for name, says in cases.items():
        with pytest.raises(UserError, match=says):
            default_config(name, meta)
    with pytest.raises(UserError, match=r"returns a list, not a torch.nn.Module"):
        build_model({"name": f"{factory}:not_a_model", "config": {}})
    with pytest.raises(UserError, match=r"raises ValueError: no such width at .*my_models.py:\d+; fix the factory"):
        build_model({"name": f"{factory}:fails", "config": {}})
    with pytest.raises(UserError, match=r"does not accept the keyword arguments .*fix --model-kwargs"):
        build_model({"name": f"{factory}:make", "config": {"num_classes": 3, "depth": 4}})
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\n\nraise RuntimeError('no GPU here')\n")
    with pytest.raises(UserError, match=r"raises RuntimeError: no GPU here at .*broken.py:3; fix the file"):
        default_config(f"{broken}:make", meta)


def test_a_factory_path_is_stored_absolute(factory, data_root, monkeypatch):
    monkeypatch.chdir(factory.parent)
    cfg = resolve_train_config(dataset="cifar10", data_dir=data_root, model="my_models.py:make", epochs=1)
    assert cfg.model == f"{factory}:make"
    assert cfg.out == str(Path("runs") / "cifar10-my_models-make")
    cfg = resolve_train_config(dataset="cifar10", data_dir=data_root, model="torchvision:resnet18", epochs=1)
    assert cfg.out == str(Path("runs") / "cifar10-resnet18") and cfg.batch_size == 64


def test_model_kwargs_parse_to_an_object():
    assert parse_model_kwargs('{"width": 32}') == {"width": 32}
    assert parse_model_kwargs(None) is None
    with pytest.raises(UserError, match="not valid JSON"):
        parse_model_kwargs("width=32")
    with pytest.raises(UserError, match="must be a JSON object .* not an array"):
        parse_model_kwargs("[1]")


def test_registry_model_names_a_wrong_option():
    with pytest.raises(UserError, match=r"Model 'resnet20' has no option depth \(its options: in_channels"):
        build_model({"name": "resnet20", "config": {"depth": 3}})


# --- check_model_fits ------------------------------------------------------------------------------


def test_fit_check_names_the_input_and_the_fix():
    model = build_model({"name": "resnet20", "config": {"in_channels": 3}})
    with pytest.raises(UserError, match=r"\[2, 1, 28, 28\].*--channels / --image-size"):
        check_model_fits(model, image_meta(1, 28, dataset="mnist"))


def test_fit_check_names_the_class_count():
    model = build_model({"name": "resnet20", "config": {"num_classes": 3}})
    with pytest.raises(UserError, match=r"gives 3 outputs but cifar10 has 10 classes; pass --model-kwargs"):
        check_model_fits(model, image_meta())
    with pytest.raises(UserError, match="returns a tuple, not a tensor of logits"):
        check_model_fits(TupleOut(), image_meta())


class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 10)

    def forward(self, x):
        return self.fc(x.mean((2, 3))), x


def test_fit_check_accepts_one_sigmoid_logit_for_two_classes():
    bilstm = build_model({"name": "bilstm", "config": default_config("bilstm", text_meta())})
    check_model_fits(bilstm, text_meta())
    one = build_model({"name": "resnet20", "config": {"num_classes": 1}})
    check_model_fits(one, image_meta(classes=2))
    with pytest.raises(UserError, match="gives 1 outputs but cifar10 has 3 classes"):
        check_model_fits(one, image_meta(classes=3))


def test_fit_check_changes_nothing():
    model = build_model({"name": "resnet20", "config": {}}).train()
    model.layer1[0].bn1.eval()  # a module the user froze stays frozen
    before = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    check_model_fits(model, image_meta())
    assert model.training and not model.layer1[0].bn1.training and model.layer1[0].bn2.training
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


# --- load_resized ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["torchvision:resnet18", "torchvision:mobilenet_v2", "resnet20", "timm:mixnet_s"])
def test_a_compacted_state_dict_loads_into_the_model_built_from_its_config(name):
    arch = {"name": name, "config": {"num_classes": 10}}
    torch.manual_seed(0)
    compacted = build_model(arch).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    traced = trace_groups(compacted, x)
    g = torch.Generator().manual_seed(0)
    removed = {grp.name: torch.randperm(grp.width, generator=g)[: int(grp.width * 0.3)] for grp in traced.groups}
    compact_(compacted, traced.groups, removed)
    fresh = build_model(arch)
    assert count(fresh) > count(compacted)
    assert load_resized(fresh, compacted.state_dict()) is fresh
    fresh.eval()
    assert count(fresh) == count(compacted)
    assert repr(fresh) == repr(compacted)  # every layer's shape attributes followed its tensors
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), compacted(x), rtol=0, atol=1e-6)


def test_load_resized_refuses_weights_of_another_model():
    state = build_model({"name": "resnet20", "config": {}}).state_dict()

    def fresh():
        return build_model({"name": "resnet20", "config": {}})

    kernel = {**state, "conv1.weight": torch.zeros(16, 3, 5, 5)}
    larger = {**state, "fc.weight": torch.zeros(11, 64)}
    extra = {**state, "head.weight": torch.zeros(1)}
    missing = {k: v for k, v in state.items() if k != "fc.bias"}
    for bad, says in [(kernel, "conv1.weight"), (larger, "fc.weight"), (extra, "head.weight"), (missing, "fc.bias")]:
        model = fresh()
        with pytest.raises(UserError, match=f"{says}.*does not match|does not match.*{says}"):
            load_resized(model, bad)
        assert model.conv1.weight.shape == (16, 3, 3, 3) and model.fc.weight.shape == (10, 64)  # unchanged
    with pytest.raises(UserError, match=r"was it trained with another --model\?"):
        load_resized(fresh(), extra)


# --- the real command ------------------------------------------------------------------------------
