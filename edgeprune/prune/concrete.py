"""A torch.fx tracer that runs the model for real while it records it, for models torch.fx cannot trace.

`fx.symbolic_trace` runs `forward` on proxies that hold no values, so Python that needs a value
fails: 'same' padding computed with `math.ceil` from input sizes (timm's TF ports), a branch on
a shape (`if new_h != H`, MobileViT), a slice bound from a tensor's length (Hugging Face
models). Here every proxy also carries the real value its node computes on the example inputs,
so such Python gets its answer and the trace goes on. What the trace keeps is what the coupling
pass needs and what torch.export would lose: torch.nn layers stay `call_module` nodes under
their qualified names, parameters stay `get_attr` nodes under their state-dict keys, and
`x.size()` / `x.shape` stay nodes, so a reshape to a computed channel count is still told apart
from one fixed in the code.

The price is that the graph is the forward of *these* inputs: a branch is the one they took and
a number Python took out of a proxy (`int()`, `bool()`, `len()`, a slice bound) is a constant.
A branch on tensor *values* (`if x.sum() > 0`) is refused (`DataDependentBranch`): another input
could run layers, or join tensors, in ways this trace never saw. A branch on sizes is kept: the
sizes are those of the example input, and a channel count among them is frozen as below.
Every node whose value escaped to Python that way is marked (`node.meta["concretized"]`), and
the coupling pass freezes any channel count among them: the tracer cannot see where that number
went, so it never prunes what it might touch. Every node also gets `node.meta["tensor_meta"]`
from its real value, as `ShapeProp` would give.
"""

from __future__ import annotations

import contextlib
import math
import operator

import torch
from torch import fx, nn
from torch.fx import _symbolic_trace
from torch.fx.node import map_aggregate
from torch.fx.passes.shape_prop import _extract_tensor_metadata

# Tensor attributes that are answered at once (no node): they never depend on the channels.
_PLAIN_ATTRS = {"dtype", "device", "is_cuda", "requires_grad", "layout", "is_sparse", "is_quantized", "is_meta"}


class DataDependentBranch(Exception):
    """The model branches on tensor values: another input could take a path this trace never saw."""


class _Proxy(fx.Proxy):
    """A proxy that can answer Python's questions with the value its node computed."""

    def _value(self):
        return self.tracer.value_of(self.node)

    def _escape(self, how: str):
        self.node.meta.setdefault("concretized", how)
        return self._value()

    def __bool__(self) -> bool:
        value = self._escape("bool")
        if isinstance(value, torch.Tensor):  # a branch on data, not on sizes: refuse, never guess the other path
            raise DataDependentBranch(
                "branches on tensor values (control flow that may take another path on other inputs)"
            )
        return bool(value)

    def __int__(self) -> int:
        return int(self._escape("int"))

    def __index__(self) -> int:
        return operator.index(self._escape("index"))

    def __float__(self) -> float:
        return float(self._escape("float"))

    def __len__(self) -> int:
        return len(self._escape("len"))

    def __ceil__(self):
        return math.ceil(self._escape("ceil"))

    def __floor__(self):
        return math.floor(self._escape("floor"))

    def __trunc__(self):
        return math.trunc(self._escape("trunc"))

    def __round__(self, ndigits=None):
        return round(self._escape("round"), ndigits)

    def __iter__(self):
        n = len(self._escape("len"))
        return iter([self[i] for i in range(n)])

    def __contains__(self, item) -> bool:
        return item in self._escape("contains")

    def keys(self):
        return self._escape("keys").keys()

    def __getattr__(self, k: str):
        if k in _PLAIN_ATTRS:
            return getattr(self._value(), k)
        return _Attribute(self, k)


class _Attribute(fx.proxy.Attribute, _Proxy):
    """`proxy.attr` (a node only once it is used) that also knows its value."""


class ConcreteTracer(fx.Tracer):
    """Trace `root` on real inputs: see the module docstring."""

    def __init__(self):
        super().__init__(autowrap_modules=(math,))
        self.proxy_buffer_attributes = True  # a buffer read in forward is a get_attr node, as a parameter is
        self.values: dict[fx.Node, object] = {}
        self.inputs: dict[str, object] = {}
        self.constants: dict[str, object] = {}

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _Proxy(node, self)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        value = self.value_of(proxy.node)
        meta = _meta(value)
        if meta is not None:
            proxy.node.meta["tensor_meta"] = meta
        return proxy

    def create_arg(self, a):
        try:
            return super().create_arg(a)
        except NotImplementedError:  # an object fx cannot write into a graph: keep it as a constant
            name = f"_concrete_constant_{len(self.constants)}"
            self.constants[name] = a
            return self.create_node("get_attr", name, (), {})

    def value_of(self, node: fx.Node):
        if node not in self.values:
            with _real_modules():
                self.values[node] = self._run(node)
        return self.values[node]

    def _run(self, node: fx.Node):
        args = map_aggregate(node.args, lambda a: self.value_of(a) if isinstance(a, fx.Node) else a)
        kwargs = map_aggregate(node.kwargs, lambda a: self.value_of(a) if isinstance(a, fx.Node) else a)
        if node.op == "placeholder":
            name = node.target.lstrip("*")
            if name in self.inputs:
                return self.inputs[name]
            return args[0] if args else None  # a specialized argument: its default
        if node.op == "get_attr":
            if node.target in self.constants:
                return self.constants[node.target]
            return _attr(self.root, node.target)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        if node.op == "call_module":
            return self.root.get_submodule(node.target)(*args, **kwargs)
        return None


@contextlib.contextmanager
def _real_modules():
    """Undo fx's patches of Module.__call__ and __getattr__ while a node runs for real, so a layer's
    own submodules are not recorded again and its attributes are values, not proxies."""
    call, get = nn.Module.__call__, nn.Module.__getattr__
    nn.Module.__call__ = _symbolic_trace._orig_module_call
    nn.Module.__getattr__ = _symbolic_trace._orig_module_getattr
    try:
        yield
    finally:
        nn.Module.__call__, nn.Module.__getattr__ = call, get


def _attr(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _meta(value):
    found = False

    def one(v):
        nonlocal found
        if isinstance(v, torch.Tensor):
            found = True
            return _extract_tensor_metadata(v)
        return v

    out = map_aggregate(value, one) if isinstance(value, (tuple, list, dict, torch.Tensor)) else None
    return out if found else None


class _Root(nn.Module):
    """Holds the user's model as `model`: fx reads the signature of the root's own forward, which a
    decorated forward (`functools.wraps` over `*args, **kwargs`, as Hugging Face models have) hides."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model


def _root_for(model: nn.Module, n: int) -> _Root:
    names = ", ".join(f"input_{i}" for i in range(n))
    scope: dict = {}
    exec(f"def forward(self, {names}):\n    return self.model({names})\n", scope)  # noqa: S102 - fixed text
    return type("_Root", (_Root,), {"forward": scope["forward"]})(model)  # fx reads type(root).forward


def concrete_trace(model: nn.Module, example_inputs: tuple) -> tuple[fx.Graph, dict[str, object]]:
    """The graph of `model` called on `example_inputs` (positional; the rest of its arguments at
    their defaults), with node targets named as in `model`, and the constants it reads that are not
    attributes of the model. The model's attributes are left as they were."""
    root = _root_for(model, len(example_inputs))
    tracer = ConcreteTracer()
    tracer.inputs = {f"input_{i}": x for i, x in enumerate(example_inputs)}
    before = set(vars(root))
    try:
        graph = tracer.trace(root)
    finally:
        for k in set(vars(root)) - before:  # fx stores tensor constants on the root
            tracer.constants[k] = vars(root)[k]
            delattr(root, k)
    for node in graph.nodes:  # name layers and parameters as the user's model does
        if node.op in ("call_module", "get_attr") and node.target.startswith("model."):
            node.target = node.target[len("model.") :]
        stack = node.meta.get("nn_module_stack")
        if stack:  # the modules whose forward made the node, by path (`model` is the user's model itself)
            node.meta["nn_module_stack"] = {
                k: ("" if path == "model" else path[len("model.") :], *rest) for k, (path, *rest) in stack.items()
            }
    return graph, tracer.constants
