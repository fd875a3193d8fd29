"""What a model costs as its layers shrink: parameters, and multiply-accumulates (MACs) per example.

Channel pruning changes the sizes of weight tensors, never how often each weight is used: a conv
kernel is applied once per output position, a Linear once per token, an LSTM's matrices once per
time step. So one forward pass on the example inputs, with hooks on the layers that multiply,
gives each weight its *uses per example*; MACs for any widths are then sum(numel(w) * uses(w)).
Embedding lookups, norms, activations and pooling count no MACs (norms fold into the convs
before them in the exported graph).
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import nn

from edgeprune.prune.layers import weight_uses


class CostModel:
    """Parameters and MACs per example of a model, for any shapes of its parameters."""

    def __init__(self, model: nn.Module, example_inputs=None):
        # where each parameter lives, so that its shape now is read without walking the module
        # tree: a budget search asks for every shape thousands of times (timm's maxvit_pico_rw_256:
        # 16,000 walks of 740 modules took 85% of its budget run)
        self._owners = [
            (k, model.get_submodule(k.rpartition(".")[0]), k.rpartition(".")[2]) for k, _ in model.named_parameters()
        ]
        self.macs_factors: dict[str, float] | None = None
        if example_inputs is not None:
            self.macs_factors = self._measure(model, example_inputs)

    @staticmethod
    @torch.no_grad()
    def _measure(model: nn.Module, example_inputs) -> dict[str, float]:
        if torch.is_tensor(example_inputs):
            example_inputs = (example_inputs,)
        device = next(model.parameters()).device
        inputs = tuple(x.to(device) for x in example_inputs)
        batch = inputs[0].shape[0] if inputs and inputs[0].dim() else 1
        factors: dict[str, float] = defaultdict(float)
        handles = []
        for path, m in model.named_modules():

            def hook(m, args, output, path=path):
                for name, uses in (weight_uses(m, output) or {}).items():
                    factors[f"{path}.{name}" if path else name] += uses / batch

            handles.append(m.register_forward_hook(hook))
        was_training = model.training
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        try:
            model.eval()
            with torch.random.fork_rng(devices=[]):
                model(*inputs)
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
        return dict(factors)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of every parameter of the model as it is now (compaction puts the resized
        parameters in the same modules)."""
        return {k: tuple(m._parameters[attr].shape) for k, m, attr in self._owners}

    def macs(self, shapes: dict[str, tuple[int, ...]]) -> int | None:
        """MACs per example with parameters of these shapes (None without example inputs)."""
        if self.macs_factors is None:
            return None
        return int(round(sum(math.prod(shapes[k]) * f for k, f in self.macs_factors.items() if k in shapes)))
