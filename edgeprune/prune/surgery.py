"""In-place compaction of any model: shrink the tensors inside the user's own modules.

A resized parameter is replaced by a new `nn.Parameter` holding the surviving rows/columns (and
its gradient's), put in the user's own modules, whose shape attributes follow (in/out channels,
features, groups, normalized_shape, hidden_size ...); the optimizer's per-weight state is sliced
with the same indices and its param groups re-pointed, so the user's `model`, `optimizer` and
LR scheduler all keep working. (Other references to the old parameter objects do not follow.)

`load_resized` does the same to a model built from its original config, so that a pruned (smaller)
state dict loads into it.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from edgeprune.errors import UserError, first_line
from edgeprune.prune.groups import Group, keep_indices, remapped_index
from edgeprune.prune.layers import resize_layer
from edgeprune.prune.sublayers import empty_sublayers

Keeps = dict[tuple[str, int], torch.Tensor]
# What pruning can shrink: the first two dims of a tensor (output and input channels / features,
# hidden units, vocabulary rows and embedding columns); kernel sizes and the like never change.
PRUNABLE_DIMS = 2

# Optimizers whose per-parameter state is tensors shaped like the parameter plus scalars (steps).
SUPPORTED_OPTIMIZERS = (
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.Adamax,
    torch.optim.NAdam,
    torch.optim.RAdam,
    torch.optim.RMSprop,
    torch.optim.Adagrad,
)


def compact_(
    model: nn.Module,
    groups: list[Group],
    removed: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None = None,
) -> Keeps:
    """Remove `removed` units of `groups` from `model` (and `optimizer`'s state) in place; returns the keeps.

    Every unit of a group goes only where the group is `whole` (a sublayer whose rule was checked:
    prune/sublayers.py); elsewhere that is a UserError, before anything changes.

    A group read through an index map (vocabulary rows: groups.Group.index_map) has its map
    renumbered: survivors in order, the entries of removed units sent to the fallback unit."""
    state = model.state_dict()
    refused = [g.name for g in groups if not g.whole and g.width and _removes_all(removed.get(g.name), g.width)]
    if refused:  # before anything changes
        raise UserError(
            f"edgeprune cannot remove every unit of {', '.join(refused)}: what is left of that layer was not shown to "
            "compute what the masked model computes (prune/sublayers.py); keep at least one unit."
        )
    keeps = keep_indices(state, groups, removed)
    maps = {
        g.index_map: remapped_index(state[g.index_map], g, removed[g.name])
        for g in groups
        if g.index_map is not None and len(removed.get(g.name, ()))
    }
    if optimizer is not None:
        slice_optimizer_state(optimizer, keeps, model)  # checks everything before it changes anything
    replaced = resize_(model, keeps)
    resize_counts(model, groups, removed)
    if optimizer is not None:
        repoint_optimizer(optimizer, replaced)
    with torch.no_grad():
        for name, new in maps.items():
            model.get_buffer(name).copy_(new)
    return keeps


def resize_counts(model: nn.Module, groups: list[Group], removed: dict[str, torch.Tensor]) -> None:
    """Lower the entries of a module's list of channel counts (`Group.sizes`: the split sizes of
    timm's MixedConv2d) by the units `removed` from the groups they count, so the forward splits
    the compacted channels where the masked model split them."""
    gone: dict[tuple[str, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for g in groups:
        n = len(removed.get(g.name, ()))
        for path, attr, i, per in g.sizes if n else ():
            gone[(path, attr)][i] += n * per
    for (path, attr), minus in gone.items():
        m = model.get_submodule(path)
        old = getattr(m, attr)
        setattr(m, attr, type(old)(v - minus.get(i, 0) for i, v in enumerate(old)))


def split_lists(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, attribute) of every list of channel counts that lists its module's conv children's
    input channels in order (timm's MixedConv2d.splits, where each piece of a split goes to its
    own conv). Compaction lowers such a list itself (resize_counts); a model rebuilt from pruned
    tensors (models.fit.load_resized) finds the lists here before resizing and `refit_split_lists`
    after, since the state dict does not hold them."""
    return [(m, k) for m in model.modules() for k in split_list_names(m)]


def split_list_names(m: nn.Module) -> list[str]:
    """The attributes of module `m` that `split_lists` finds (the tracer prunes the pieces of a
    split only at such a list: one a rebuilt model can recover)."""
    convs = [c for c in m.children() if isinstance(c, nn.modules.conv._ConvNd)]
    if len(convs) < 2 or len(convs) != len(m._modules):
        return []
    widths = [c.in_channels for c in convs]
    return [k for k, v in vars(m).items() if not k.startswith("_") and type(v) in (list, tuple) and list(v) == widths]


def refit_split_lists(lists: list[tuple[nn.Module, str]]) -> None:
    """Set each list `split_lists` found to its conv children's input channels now."""
    for m, attr in lists:
        widths = [c.in_channels for c in m.children()]
        setattr(m, attr, type(getattr(m, attr))(widths))


def _removes_all(units: torch.Tensor | None, width: int) -> bool:
    return units is not None and len(units) > 0 and len(torch.unique(units)) >= width


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


@torch.no_grad()
def resize_(model: nn.Module, keeps: Keeps) -> dict[nn.Parameter, nn.Parameter]:
    """Keep only the `keeps` indices of each tensor, then update the shape attributes of the layers
    touched. Returns {old parameter: its replacement}.

    A resized parameter is a new `nn.Parameter` put where the old one was (in every module that
    holds it): autograd caches a leaf's shape in its gradient accumulator, which stays alive as
    long as any earlier graph does (the training loop's last `loss`), so resizing a parameter in
    place would make the next backward fail. Buffers are resized in place."""
    tensors = _tensors(model)
    by_name = defaultdict(list)
    for (name, dim), idx in keeps.items():
        if name not in tensors:
            raise KeyError(f"{name} is not a parameter or buffer of the model")
        by_name[name].append((dim, idx))
    params = dict(model.named_parameters())
    replaced: dict[nn.Parameter, nn.Parameter] = {}
    for name, cuts in by_name.items():
        t = tensors[name]
        data, grad = t.data, t.grad
        for dim, idx in cuts:
            data = data.index_select(dim, idx.to(data.device))
            if grad is not None:
                grad = grad.index_select(dim, idx.to(grad.device))
        if name in params:
            new = nn.Parameter(data, requires_grad=t.requires_grad)
            new.grad = grad
            replaced[t] = new
        else:
            t.data = data
    for m in model.modules():  # every holder of a replaced parameter (tied weights included)
        for key, p in list(m._parameters.items()):
            if p is not None and p in replaced:
                setattr(m, key, replaced[p])  # RNNs also refresh their flat weight list here
    update_shapes(model, by_name)
    return replaced


def update_shapes(model: nn.Module, tensor_names) -> None:
    """Bring the shape attributes of the layers owning these tensors in line with their tensors
    (each layer type's rule: prune/layers.py); a sublayer left with no unit computes what is left
    of it (prune/sublayers.py)."""
    for path in sorted({name.rpartition(".")[0] for name in tensor_names}):
        resize_layer(model.get_submodule(path))
    empty_sublayers(model)


@torch.no_grad()
def load_resized(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Load `state_dict` into `model` (built from its original, unpruned config) although pruning
    made some of its tensors smaller: each such tensor of `model` takes the saved shape, then the
    shape attributes of its layer follow (channels, features, groups, hidden size ...). Returns `model`.

    A UserError, before anything changes, when a key is missing or extra or a tensor differs in a
    way pruning never causes (another rank, a larger size, a kernel size)."""
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    own = model.state_dict()
    name = type(model).__name__

    def mismatch(why: str) -> UserError:
        return UserError(
            f"The saved state dict does not match the model {name} ({why}); was it trained with another --model?"
        )

    missing, extra = sorted(set(own) - set(state_dict)), sorted(set(state_dict) - set(own))
    if missing or extra:
        what = [f"missing {', '.join(missing[:3])}"] if missing else []
        what += [f"unexpected {', '.join(extra[:3])}"] if extra else []
        raise mismatch(", ".join(what))
    resized = {}
    for key, saved in state_dict.items():
        if not torch.is_tensor(saved):
            raise mismatch(f"{key} is a {type(saved).__name__}, not a tensor")
        have = own[key].shape
        if saved.shape == have:
            continue
        if (
            saved.dim() != len(have)
            or any(s != h for s, h in zip(saved.shape[PRUNABLE_DIMS:], have[PRUNABLE_DIMS:]))
            or any(s > h for s, h in zip(saved.shape, have))
            or key not in tensors
        ):
            raise mismatch(f"{key} is {list(saved.shape)} in the file, {list(have)} in the model")
        resized[key] = saved.shape
    lists = split_lists(model)
    for key, shape in resized.items():
        t = tensors[key]
        t.data = torch.empty(shape, dtype=t.dtype, device=t.device)
        if t.grad is not None:
            t.grad = None
    update_shapes(model, resized)
    refit_split_lists(lists)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise mismatch(first_line(e)) from None
    return model


def repoint_optimizer(optimizer: torch.optim.Optimizer, replaced: dict[nn.Parameter, nn.Parameter]) -> None:
    """Make `optimizer` train the replacement parameters: param groups and state follow."""
    for group in optimizer.param_groups:
        group["params"] = [replaced.get(p, p) for p in group["params"]]
    for old, new in replaced.items():
        if old in optimizer.state:
            optimizer.state[new] = optimizer.state.pop(old)


def check_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """A UserError unless edgeprune knows how to slice this optimizer's per-weight state."""
    if not isinstance(optimizer, SUPPORTED_OPTIMIZERS):
        names = ", ".join(t.__name__ for t in SUPPORTED_OPTIMIZERS)
        raise UserError(
            f"edgeprune cannot slice the state of a {type(optimizer).__name__} optimizer; use one of {names}."
        )


def slice_optimizer_state(optimizer: torch.optim.Optimizer, keeps: Keeps, model: nn.Module) -> None:
    """Slice every state tensor shaped like its parameter with the parameter's keeps; scalars stay.

    Call it before the parameters are resized (`compact_` does): a state tensor is recognized by
    having its parameter's current shape. Nothing is changed unless every entry can be sliced.
    """
    check_optimizer(optimizer)
    params = dict(model.named_parameters())
    cuts = defaultdict(list)
    for (name, dim), idx in keeps.items():
        if name in params:
            cuts[name].append((dim, idx))
    plan = []
    for name, dims in cuts.items():
        p = params[name]
        state = optimizer.state.get(p)
        if not state:
            continue
        for key, v in state.items():
            if not torch.is_tensor(v) or v.dim() == 0:
                continue  # step counters and other scalars are kept as they are
            if v.shape != p.shape:
                raise UserError(
                    f"The {type(optimizer).__name__} state '{key}' of {name} has shape {tuple(v.shape)}, not the "
                    f"parameter's {tuple(p.shape)}; edgeprune can only slice per-weight state."
                )
            plan.append((state, key, dims))
    for state, key, dims in plan:
        v = state[key]
        for dim, idx in dims:
            v = v.index_select(dim, idx.to(v.device))
        state[key] = v
