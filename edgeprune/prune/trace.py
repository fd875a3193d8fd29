"""Coupling derived from the model: trace it with torch.fx and turn the graph into `Group`s.

A *channel space* is a set of channels that must be removed together: one producer's output
channels, merged with every other producer's that a residual add (or an SE multiply, or an
alignment in a concatenation along another axis) pairs position by position. Each space becomes
one `Group` whose slices are the producers' own rows (scored) and every consumer's columns; a
concatenation lays several spaces side by side along the channel axis, so a consumer sees each
at a static offset (`OffsetSlice`, fixed at trace time: the pruner traces again after every
compaction). A chunk along the channels (or a grouped convolution's groups) cuts spaces at the
piece boundaries and couples the pieces unit by unit, so every piece keeps the same width.

What the tracer does not understand on a channel path (an unknown function or layer, a reshape
to a channel count fixed in the code, a reduction over the channels, a layer called twice)
freezes the spaces that reach it: they are listed in `TraceResult.frozen` with the node and the
reason and are never pruned, instead of being guessed. The model's input channels and its
outputs are never units.

Why torch.fx (`symbolic_trace`) and not torch.export: fx keeps the user's module hierarchy, so
every torch.nn layer is one `call_module` node named by its qualified name and its parameters
are the state-dict keys that masks, scores and compaction already use; one rule per layer type
reads the layer's own attributes (groups, normalized_shape, gates). It also records `x.size()`,
`x.shape` and the arithmetic on them as nodes, so a reshape computed from the channel count is
told apart from one hard-coded in the model's source (which compaction would break). torch.export
lowers layers to ATen ops (aten.convolution, aten.addmm) with the parameters lifted to inputs
under new names, so every rule would have to map names back and recognize layers from op
patterns. The price of fx: Python that needs a value (a branch on a size, `math.ceil` of a shape, a slice
bound from a length) cannot be traced symbolically. Such a model is traced again by running it
on the example input (prune/concrete.py), which keeps the same node kinds and names; only a
branch on tensor *values* is refused (a `UserError` naming the call), since another input could
take a path the trace never saw. Either way the graph is the forward of the mode the model is in
when traced.

A layer is known by what it computes, not by its class. torch.fx records a torch.nn layer as a
`call_module`; a subclass with its own forward (timm's BatchNormAct2d, a 'same'-padding conv)
or a custom autograd Function is traced into, and there a functional op on a layer's own
parameters (`F.conv2d(x, self.weight, ...)`, `F.batch_norm(...)`) is that layer, by the same
rule as the module. One `LayerRule` per layer type (prune/layers.py) serves the tracer,
compaction and cost. A parameter also read elsewhere (other than for its kernel size) freezes the
layer's channels with the reader named.
"""

from __future__ import annotations

import contextlib
import copy
import operator
import traceback
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from edgeprune.errors import UserError
from edgeprune.prune.compact import whole_sublayers
from edgeprune.prune.groups import Group, OffsetSlice, Slice
from edgeprune.prune.layers import FUNCTIONAL, rule_for
from edgeprune.prune.sublayers import EmptyLinear
from edgeprune.prune.surgery import split_list_names
from edgeprune.prune.tracevals import TensorVal, fixed_like, origin_of


@dataclass(frozen=True)
class Frozen:
    """A channel space that will not be pruned: its name, width, the node that froze it and why."""

    space: str
    width: int
    node: str
    reason: str


@dataclass
class TraceResult:
    groups: list[Group]
    frozen: list[Frozen] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # layers with parameters the traced forward never runs
    method: str = "fx"  # "fx": torch.fx symbolic trace; "concrete": run on the example input (prune/concrete.py)
    whole_note: str | None = None  # why no group of Linear layers may lose every unit (prune/compact.py)

    def describe(self) -> str:
        lines = [f"{len(self.groups)} prunable channel spaces, {len(self.frozen)} frozen"]
        for g in self.groups:
            owners = sorted({s.name.rsplit(".", 1)[0] for s in g.own()})
            lines.append(f"  {g.name}: {g.width} units, producers {', '.join(owners)}")
        for f in self.frozen:
            lines.append(f"  frozen {f.space} ({f.width}): {f.reason} [{f.node}]")
        whole = [g.name for g in self.groups if g.whole]
        if whole:
            lines.append(f"  may lose every unit (the whole sublayer goes): {', '.join(whole)}")
        if self.whole_note:
            lines.append(f"  every group keeps a unit: {self.whole_note}")
        if self.unused:
            lines.append(
                "  not in the traced forward (never resized; trace in the mode you train in): " + ", ".join(self.unused)
            )
        return "\n".join(lines)


# --- what the tracer knows about values --------------------------------------------------------

_Seg = tuple  # (space id, block): a space's units in order along the channel axis, `block` positions each


@dataclass(frozen=True)
class _Int:
    """An int computed in forward: exactly the channel count of `chan`, or derived from channel counts."""

    chan: tuple | None = None
    derived: tuple = ()


@dataclass(frozen=True)
class _Size:
    t: TensorVal


@dataclass
class _Space:
    width: int
    name: str
    parent: int
    start: int = 0  # first unit within the producer's space `name` (a piece of a cut space)
    cut: tuple | None = None  # children (sub-ranges of units, in order) once cut
    frozen: tuple | None = None  # (node, reason) of the first cause
    hidden: bool = False  # fixed channels (the model's input, a constant): never units, not reported


class _Spaces:
    """Union-find over channel spaces, with cuts into consecutive sub-ranges."""

    def __init__(self):
        self.s: list[_Space] = []

    def new(self, width: int, name: str, fixed: tuple | None = None) -> int:
        self.s.append(_Space(width, name, len(self.s), frozen=fixed, hidden=fixed is not None))
        return len(self.s) - 1

    def find(self, i: int) -> int:
        root = i
        while self.s[root].parent != root:
            root = self.s[root].parent
        while self.s[i].parent != root:
            self.s[i].parent, i = root, self.s[i].parent
        return root

    def leaves(self, i: int) -> list[tuple[int, int]]:
        """The current leaf spaces holding space i's units: (leaf, first unit of i it holds)."""
        r = self.find(i)
        if self.s[r].cut is None:
            return [(r, 0)]
        out, start = [], 0
        for c in self.s[r].cut:
            out += [(leaf, start + u) for leaf, u in self.leaves(c)]
            start += self.s[c].width
        return out

    def cut(self, r: int, at: int) -> tuple[int, int]:
        sp = self.s[r]
        lo, hi = self.new(at, sp.name), self.new(sp.width - at, sp.name)
        self.s[lo].start, self.s[hi].start = sp.start, sp.start + at
        for c in (lo, hi):
            self.s[c].frozen, self.s[c].hidden = sp.frozen, sp.hidden
        sp.cut = (lo, hi)
        return lo, hi

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        A, B = self.s[ra], self.s[rb]
        assert A.width == B.width and A.cut is None and B.cut is None
        if (A.hidden and not B.hidden) or (A.hidden == B.hidden and rb < ra):
            ra, rb, A, B = rb, ra, B, A
        B.parent = ra
        A.frozen = A.frozen or B.frozen
        A.hidden = A.hidden and B.hidden

    def freeze(self, i: int, node: str, reason: str) -> None:
        for leaf, _ in self.leaves(i):
            if self.s[leaf].frozen is None:
                self.s[leaf].frozen = (node, reason)

    def freeze_from(self, first: int, node: str, reason: str) -> None:
        for i in range(first, len(self.s)):
            self.freeze(i, node, reason)


@dataclass(frozen=True)
class _Rec:
    """Tensor `name` along `dim` holds space `space`'s units from position `offset`, `block` each."""

    space: int
    name: str
    dim: int
    offset: int
    block: int
    scored: bool


def _meta_shape(meta):
    if isinstance(meta, TensorMetadata):
        return tuple(meta.shape)
    if isinstance(meta, (tuple, list)):
        return tuple(_meta_shape(m) for m in meta)
    if isinstance(meta, dict):
        return {k: _meta_shape(v) for k, v in meta.items()}
    return None


def _walk(a):
    """Every tracer value inside a nested argument structure."""
    if isinstance(a, (TensorVal, _Int, _Size)):
        yield a
    elif isinstance(a, (tuple, list)):
        for x in a:
            yield from _walk(x)
    elif isinstance(a, dict):
        for x in a.values():
            yield from _walk(x)
    elif isinstance(a, slice):
        yield from _walk((a.start, a.stop, a.step))


def _qualname(fn) -> str:
    mod = getattr(fn, "__module__", None) or ""
    name = getattr(fn, "__name__", None) or repr(fn)
    if mod in ("_operator", "operator", "builtins"):
        return name
    mod = {"torch._C._nn": "torch.nn.functional", "torch._C._VariableFunctions": "torch"}.get(mod, mod)
    return f"{mod}.{name}" if mod else name


def _norm_dim(d: int, ndim: int) -> int:
    return d + ndim if d < 0 else d


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= x
    return out


# --- op tables ------------------------------------------------------------------------------------

# Elementwise ops that act on every channel alike and keep a masked channel finite (a removed
# channel's value may be anything finite: every consumer's slice of it is masked too).
_UNARY_FUNCS = {
    torch.relu,
    torch.relu_,
    F.relu,
    F.relu_,
    F.relu6,
    F.silu,
    F.gelu,
    F.hardswish,
    F.hardsigmoid,
    F.hardtanh,
    F.hardtanh_,
    F.leaky_relu,
    F.elu,
    F.selu,
    F.celu,
    F.mish,
    F.softplus,
    F.softsign,
    F.sigmoid,
    F.tanh,
    torch.sigmoid,
    torch.tanh,
    torch.abs,
    torch.neg,
    torch.clamp,
    torch.clip,
    operator.neg,
    operator.pos,
    F.dropout,
    F.dropout1d,
    F.dropout2d,
    F.dropout3d,
    F.alpha_dropout,
    F.feature_alpha_dropout,
}
_UNARY_METHODS = {
    "relu",
    "relu_",
    "sigmoid",
    "sigmoid_",
    "tanh",
    "tanh_",
    "clamp",
    "clamp_",
    "clip",
    "clip_",
    "abs",
    "neg",
    "contiguous",
    "clone",
    "detach",
    "float",
    "double",
    "half",
    "bfloat16",
    "to",
    "type_as",
    "cpu",
    "cuda",
    "requires_grad_",
}
_UNARY_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.Mish,
    nn.Softplus,
    nn.Softsign,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
# Ops on the trailing spatial dims (how many): every channel pooled or resized on its own.
_SPATIAL_MODULES = {
    nn.MaxPool1d: 1,
    nn.MaxPool2d: 2,
    nn.MaxPool3d: 3,
    nn.AvgPool1d: 1,
    nn.AvgPool2d: 2,
    nn.AvgPool3d: 3,
    nn.AdaptiveAvgPool1d: 1,
    nn.AdaptiveAvgPool2d: 2,
    nn.AdaptiveAvgPool3d: 3,
    nn.AdaptiveMaxPool1d: 1,
    nn.AdaptiveMaxPool2d: 2,
    nn.AdaptiveMaxPool3d: 3,
    nn.LPPool1d: 1,
    nn.LPPool2d: 2,
    nn.ZeroPad1d: 1,
    nn.ZeroPad2d: 2,
    nn.ZeroPad3d: 3,
}
_SPATIAL_FUNCS = {
    F.max_pool1d: 1,
    F.max_pool2d: 2,
    F.max_pool3d: 3,
    F.avg_pool1d: 1,
    F.avg_pool2d: 2,
    F.avg_pool3d: 3,
    F.adaptive_avg_pool1d: 1,
    F.adaptive_avg_pool2d: 2,
    F.adaptive_avg_pool3d: 3,
    F.adaptive_max_pool1d: 1,
    F.adaptive_max_pool2d: 2,
    F.adaptive_max_pool3d: 3,
    F.lp_pool1d: 1,
    F.lp_pool2d: 2,
}
_REDUCE_METHODS = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "logsumexp"}
_REDUCE_FUNCS = {torch.mean, torch.sum, torch.amax, torch.amin, torch.max, torch.min, torch.std, torch.var}
_BINARY = {
    operator.add: "add",
    operator.sub: "add",
    operator.mul: "mul",
    operator.truediv: "div",
    operator.iadd: "add",
    operator.isub: "add",
    operator.imul: "mul",
    torch.add: "add",
    torch.sub: "add",
    torch.mul: "mul",
    torch.div: "div",
    torch.maximum: "add",
    torch.minimum: "add",
}
_BINARY_METHODS = {
    "add": "add",
    "add_": "add",
    "sub": "add",
    "sub_": "add",
    "mul": "mul",
    "mul_": "mul",
    "div": "div",
    "div_": "div",
    "maximum": "add",
    "minimum": "add",
}
_INT_OPS = {operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv, operator.mod}
_CAT = {torch.cat, torch.concat, torch.concatenate}
_SOFTMAX = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax}


def _stochastic_depth(target) -> bool:
    """torchvision.ops.stochastic_depth (fx-wrapped): multiplies each sample by one random scalar."""
    return getattr(target, "__name__", "") == "stochastic_depth" and (
        getattr(target, "__module__", "") or ""
    ).startswith("torchvision.ops")


class _Coupling:
    def __init__(self, model: nn.Module, graph: fx.Graph, allow_norm_pruning: bool, constants: dict | None = None):
        self.model, self.graph, self.constants = model, graph, constants or {}
        self.allow_norm = allow_norm_pruning
        self.sp = _Spaces()
        self.recs: list[_Rec] = []
        self.counts: list[tuple] = []  # (space, module path, attribute, index, per unit): see split()
        self._pieces = None
        self.state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        self.calls, self.attr_reads = defaultdict(int), defaultdict(int)
        for n in graph.nodes:
            if n.op == "call_module" and _has_state(model.get_submodule(n.target)):
                self.calls[n.target] += 1  # a stateless layer (ReLU, pooling) may well be called many times
            elif n.op == "get_attr":
                self.attr_reads[n.target] += 1
        owners = defaultdict(list)
        for name, p in model.named_parameters(remove_duplicate=False):
            owners[id(p)].append(name)
        self.shared = {n: names for names in owners.values() if len(names) > 1 for n in names}

    # --- spaces and records ------------------------------------------------------------------------
    def emit(self, name: str, dim: int, segs, scored: bool, scale: int = 1, base: int = 0) -> None:
        if name not in self.state:
            return
        pos = 0
        for sp, blk in segs:
            self.recs.append(_Rec(sp, name, dim, base + pos * scale, blk * scale, scored))
            pos += self.sp.s[sp].width * blk

    def produce(self, name: str, width: int, rows: list[str], shape, cdim: int) -> TensorVal:
        """A new space of `width` channels produced by layer `name` (its `rows` own the channels along dim 0)."""
        sp = self.sp.new(width, name)
        for r in rows:
            self.emit(r, 0, ((sp, 1),), scored=True)
        return TensorVal(shape, cdim, ((sp, 1),))

    def freeze(self, vals, node: str, reason: str) -> None:
        for v in _walk(vals):
            if isinstance(v, TensorVal) and v.cdim is not None:
                for sp, _ in v.segs:
                    self.sp.freeze(sp, node, reason)
            elif isinstance(v, _Size) and v.t.cdim is not None:
                self.freeze(v.t, node, reason)
            elif isinstance(v, _Int):
                for segs in ((v.chan,) if v.chan else ()) + v.derived:
                    for sp, _ in segs:
                        self.sp.freeze(sp, node, reason)

    def layout(self, t: TensorVal, width: int, name: str):
        """The segments along an axis of `t` that `width` positions long; fixed channels get a hidden space."""
        if t.cdim is not None:
            return t.segs
        return ((self.sp.new(width, name, fixed=(name, "coupled to channels that cannot be pruned")), 1),)

    def _leaf_queue(self, segs) -> deque:
        return deque((leaf, blk) for sp, blk in segs for leaf, _ in self.sp.leaves(sp))

    def _pop(self, q: deque):
        """Next leaf of a queue, re-expanded if it was cut since it was queued."""
        leaf, blk = q.popleft()
        while self.sp.s[self.sp.find(leaf)].cut is not None:
            for item in reversed([(lf, blk) for lf, _ in self.sp.leaves(leaf)]):
                q.appendleft(item)
            leaf, blk = q.popleft()
        return self.sp.find(leaf), blk

    def align(self, a, b) -> bool:
        """Couple two layouts position by position (cutting spaces where their boundaries differ)."""
        qa, qb = self._leaf_queue(a), self._leaf_queue(b)
        while qa and qb:
            (ra, ba), (rb, bb) = self._pop(qa), self._pop(qb)
            if ba != bb:
                return False
            wa, wb = self.sp.s[ra].width, self.sp.s[rb].width
            if wa > wb:
                ra, hi = self.sp.cut(ra, wb)
                qa.appendleft((hi, ba))
            elif wb > wa:
                rb, hi = self.sp.cut(rb, wa)
                qb.appendleft((hi, bb))
            self.sp.union(ra, rb)
        return not qa and not qb

    def chunk_layout(self, segs, n: int):
        """Split a layout into n equal pieces coupled unit by unit (so they stay equal); None if impossible."""
        q = self._leaf_queue(segs)
        total = sum(self.sp.s[leaf].width * blk for leaf, blk in q)
        if n < 1 or total % n:
            return None
        size, pieces, cur, pos = total // n, [], [], 0
        while q:
            leaf, blk = self._pop(q)
            w = self.sp.s[leaf].width * blk
            room = size - pos
            if w > room:
                if room % blk:
                    return None
                leaf, hi = self.sp.cut(leaf, room // blk)
                q.appendleft((hi, blk))
                w = room
            cur.append((leaf, blk))
            pos += w
            if pos == size:
                pieces.append(tuple(cur))
                cur, pos = [], 0
        if len(pieces) != n:
            return None
        for p in pieces[1:]:
            if not self.align(pieces[0], p):
                return None
        return pieces[0]

    # --- the pass --------------------------------------------------------------------------------
    def run(self) -> dict:
        env: dict = {}
        for node in self.graph.nodes:
            args = fx.node.map_arg(node.args, lambda n: env[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
            shape = _meta_shape(node.meta.get("tensor_meta"))
            if node.op == "placeholder":
                env[node] = fixed_like(shape, f"the model's input {node.name}")
            elif node.op == "get_attr":
                env[node] = self.get_attr(node, shape)
            elif node.op == "output":
                self.freeze(args, "output", "the model's output (classifier outputs are never pruned)")
            else:
                first = len(self.sp.s)
                try:
                    out = self.call(node, args, kwargs, shape)
                except Exception as e:  # noqa: BLE001 - a tracer bug must freeze, never prune wrongly
                    where = f"{node.name} ({node.op} {node.target})"
                    reason = f"tracer error {type(e).__name__}: {e}"
                    self.sp.freeze_from(first, where, reason)
                    out = self.unknown(args, kwargs, shape, where, reason)
                env[node] = self.checked(out, node)
            if "concretized" in node.meta:
                self.escaped(env[node], node)
        return env

    def escaped(self, v, node) -> None:
        """A value Python took out of the trace (concrete tracer: int(), bool(), len(), a slice bound):
        where it went cannot be followed, so a channel count in it is never changed."""
        how = node.meta["concretized"]
        if how == "len":  # a length: the number of dims of a shape, or a tensor's first dim
            if isinstance(v, TensorVal) and v.cdim == 0:
                self.freeze(v, node.name, "the number of its channels is read as a Python value (len)")
            return
        for a in _walk(v):
            if isinstance(a, TensorVal) and a.cdim is not None:
                self.freeze(a, node.name, f"its channels are read as a Python value ({how})")
            elif isinstance(a, _Int):
                self.freeze(a, node.name, f"a channel count becomes a Python value ({how}) the tracer cannot follow")

    def checked(self, v, node):
        """Drop a layout that does not add up to the tensor's channel count (never trust it)."""
        if isinstance(v, TensorVal) and v.cdim is not None and v.shape is not None:
            total = sum(self.sp.s[sp].width * blk for sp, blk in v.segs)
            if v.cdim >= len(v.shape) or total != v.shape[v.cdim]:
                self.freeze(v, node.name, "internal: channel layout does not match the shape (please report)")
                return TensorVal(v.shape)
        if isinstance(v, tuple):
            return tuple(self.checked(x, node) for x in v)
        return v

    def get_attr(self, node, shape):
        if node.target in self.constants:
            obj = self.constants[node.target]
        else:
            obj = self.model
            for part in node.target.split("."):
                obj = getattr(obj, part)
        if not torch.is_tensor(obj):
            return obj
        # a parameter read once, directly by one op, can be resized with the channels it scales
        once = len(node.users) == 1 and self.attr_reads[node.target] == 1
        key = node.target if once and node.target in self.state and node.target not in self.shared else None
        return TensorVal(tuple(obj.shape), param=key)

    def call(self, node, args, kwargs, shape):
        where = self.where(node)
        if node.op == "call_module":
            m = self.model.get_submodule(node.target)
            if self.calls[node.target] > 1:
                return self.unknown(
                    args, kwargs, shape, where, f"called {self.calls[node.target]} times (shared weights)"
                )
            own = [f"{node.target}.{n}" for n, _ in m.named_parameters()]
            shared = [n for n in own if n in self.shared]
            if shared:
                others = [n for n in self.shared[shared[0]] if n != shared[0]]
                return self.unknown(args, kwargs, shape, where, f"shares its weights with {', '.join(others)}")
            read = [n for n in own if n in self.attr_reads]
            if read:
                return self.unknown(args, kwargs, shape, where, f"its weight {read[0]} is also read directly")
            return self.module(node, m, args, kwargs, shape, where)
        fn = node.target
        if node.op == "call_method":
            return self.method(node, fn, args, kwargs, shape, where)
        return self.function(node, fn, args, kwargs, shape, where)

    def where(self, node) -> str:
        if node.op == "call_module":
            return f"{node.target} ({type(self.model.get_submodule(node.target)).__name__})"
        if node.op == "call_method":
            return f"{node.name} (Tensor.{node.target})"
        return f"{node.name} ({_qualname(node.target)})"

    def unknown(self, args, kwargs, shape, where, reason="not understood on a channel path"):
        self.freeze((args, kwargs), where, reason)
        return fixed_like(shape, where)

    def guard_ints(self, args, kwargs, where) -> None:
        """An op reading a channel count would compute something else once channels are removed."""
        for v in _walk((args, kwargs)):
            if isinstance(v, _Int) and (v.chan or v.derived):
                self.freeze(v, where, "reads the channel count")

    # --- modules ---------------------------------------------------------------------------------
    def module(self, node, m, args, kwargs, shape, where):
        t = node.target
        rule = rule_for(m)
        if rule is not None and not rule.one_input:
            return self.layer(rule, t, m, args, kwargs, shape, where)
        if len(args) != 1 or kwargs or not isinstance(args[0], TensorVal):
            return self.unknown(args, kwargs, shape, where, "called with other than one tensor input")
        x = args[0]
        if isinstance(m, _UNARY_MODULES):
            return self.unary(x, shape)
        if type(m) in _SPATIAL_MODULES:
            if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)) and m.return_indices:
                return self.unknown(args, kwargs, shape, where, "returns pooling indices")
            return self.spatial(x, shape, _SPATIAL_MODULES[type(m)], where)
        if isinstance(m, nn.Flatten):
            return self.flatten(x, shape, m.start_dim, m.end_dim, where)
        if rule is not None:
            return self.layer(rule, t, m, args, kwargs, shape, where)
        return self.unknown(args, kwargs, shape, where, f"layer type {type(m).__name__} is not understood")

    def layer(self, rule, t, m, args, kwargs, shape, where):
        """A torch.nn layer with parameters, by its rule (prune/layers.py)."""
        numbers = rule.numbers(m, t, args, kwargs)
        if isinstance(numbers, str):
            return self.unknown(args, kwargs, shape, where, numbers)
        return rule.couple(self, t, args[0], shape, where, **numbers)

    def unary(self, x, shape):
        if not isinstance(x, TensorVal):
            return fixed_like(shape)
        return TensorVal(shape, x.cdim, x.segs) if x.cdim is not None else TensorVal(shape, origin=x.origin)

    def spatial(self, x, shape, k: int, where):
        """Pooling, padding or resizing of the last k dims: fine as long as the channels are elsewhere."""
        if not isinstance(x, TensorVal) or x.cdim is None:
            return fixed_like(shape, origin_of(x))
        if x.cdim >= len(x.shape) - k or len(shape) != len(x.shape):
            self.freeze(x, where, "pools or resizes along the channel axis")
            return TensorVal(shape)
        return TensorVal(shape, x.cdim, x.segs)

    # --- functions and methods -------------------------------------------------------------------
    def function(self, node, fn, args, kwargs, shape, where):
        if fn in _INT_OPS and not any(isinstance(a, TensorVal) for a in args):
            return self.int_op(args)
        if fn is operator.getitem:
            return self.getitem(args[0], args[1], shape, where)
        if fn is getattr:
            return self.attr(args[0], args[1], shape, where)
        self.guard_ints(args, kwargs, where)
        if fn in FUNCTIONAL:
            return self.functional_layer(node, fn, args, kwargs, shape, where)
        if fn is F.pad:
            pad = _arg(args, kwargs, 1, "pad", None)
            if isinstance(pad, (tuple, list)) and len(pad) % 2 == 0 and isinstance(args[0], TensorVal):
                return self.spatial(args[0], shape, len(pad) // 2, where)
            return self.unknown(args, kwargs, shape, where, "pads with sizes the tracer cannot read")
        if fn in _UNARY_FUNCS or _stochastic_depth(fn):
            return self.unary(_arg(args, kwargs, 0, "input", None), shape)
        if fn in _SPATIAL_FUNCS:
            if kwargs.get("return_indices") or (fn in (F.adaptive_max_pool2d,) and len(args) > 2 and args[2]):
                return self.unknown(args, kwargs, shape, where, "returns pooling indices")
            return self.spatial(args[0], shape, _SPATIAL_FUNCS[fn], where)
        if fn is F.interpolate:
            x = args[0]
            return self.spatial(x, shape, len(x.shape) - 2, where) if isinstance(x, TensorVal) else fixed_like(shape)
        if fn is torch.flatten:
            return self.flatten(
                args[0], shape, _arg(args, kwargs, 1, "start_dim", 0), _arg(args, kwargs, 2, "end_dim", -1), where
            )
        if fn in _BINARY:
            a, b = _arg(args, kwargs, 0, "input", None), _arg(args, kwargs, 1, "other", None)
            return self.binary(a, b, shape, where, _BINARY[fn])
        if fn in _CAT:
            return self.cat(list(_arg(args, kwargs, 0, "tensors", ())), _arg(args, kwargs, 1, "dim", 0), shape, where)
        if fn in _REDUCE_FUNCS:
            return self.reduce(args, kwargs, shape, where)
        if fn is F.scaled_dot_product_attention:
            return self.attention(args, kwargs, shape, where)
        if fn in (torch.matmul, operator.matmul):
            return self.matmul(args[0], args[1], shape, where)
        if fn in _SOFTMAX:
            return self.softmax(args[0], _arg(args, kwargs, 1, "dim", None), shape, where)
        if fn is torch.reshape:
            return self.reshape(args[0], args[1:], shape, where, node)
        if fn is torch.permute:
            return self.permute(args[0], args[1], shape)
        if fn is torch.transpose:
            return self.transpose(args[0], args[1], args[2], shape)
        if fn is torch.chunk:
            return self.chunk(args[0], args[1], _arg(args, kwargs, 2, "dim", 0), shape, where)
        if fn is torch.split:
            sizes = _arg(args, kwargs, 1, "split_size_or_sections", None)
            return self.split(node, args[0], sizes, _arg(args, kwargs, 2, "dim", 0), shape, where)
        if fn is torch.flip:
            return self.flip(args[0], _arg(args, kwargs, 1, "dims", ()), shape, where)
        if fn is torch.squeeze or fn is torch.unsqueeze:
            return self.squeeze(args[0], _arg(args, kwargs, 1, "dim", None), shape, where, fn is torch.unsqueeze)
        return self.unknown(args, kwargs, shape, where, f"{_qualname(fn)} is not understood on a channel path")

    def method(self, node, name, args, kwargs, shape, where):
        x = args[0]
        if name == "size":
            d = _arg(args, kwargs, 1, "dim", None)
            return _Size(x) if d is None else self.size_of(x, d)
        if name == "dim":
            return _Int()
        if name == "numel":
            return _Int(derived=(x.segs,)) if isinstance(x, TensorVal) and x.cdim is not None else _Int()
        if name in ("view", "reshape"):
            return self.reshape(x, args[1:], shape, where, node)
        if name in ("view_as", "reshape_as") and isinstance(_arg(args, kwargs, 1, "other", None), TensorVal):
            # to another tensor's shape: its sizes, as `x.reshape(other.shape)` reads them
            return self.reshape(x, (_Size(_arg(args, kwargs, 1, "other", None)),), shape, where, node)
        if name == "expand":
            return self.expand(x, args[1:], shape, where)
        self.guard_ints(args, kwargs, where)
        if name in _UNARY_METHODS:
            return self.unary(x, shape)
        if name in _BINARY_METHODS:
            return self.binary(x, _arg(args, kwargs, 1, "other", None), shape, where, _BINARY_METHODS[name])
        if name == "flatten":
            return self.flatten(
                x, shape, _arg(args, kwargs, 1, "start_dim", 0), _arg(args, kwargs, 2, "end_dim", -1), where
            )
        if name in _REDUCE_METHODS:
            return self.reduce(args, kwargs, shape, where)
        if name == "matmul":
            return self.matmul(x, args[1], shape, where)
        if name in ("softmax", "log_softmax"):
            return self.softmax(x, _arg(args, kwargs, 1, "dim", None), shape, where)
        if name == "permute":
            dims = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
            return self.permute(x, dims, shape)
        if name == "transpose":
            return self.transpose(x, args[1], args[2], shape)
        if name == "chunk":
            return self.chunk(x, args[1], _arg(args, kwargs, 2, "dim", 0), shape, where)
        if name == "split":
            sizes = _arg(args, kwargs, 1, "split_size", None)
            return self.split(node, x, sizes, _arg(args, kwargs, 2, "dim", 0), shape, where)
        if name == "flip":
            dims = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
            return self.flip(x, kwargs.get("dims", dims), shape, where)
        if name in ("squeeze", "unsqueeze"):
            return self.squeeze(x, _arg(args, kwargs, 1, "dim", None), shape, where, name == "unsqueeze")
        return self.unknown(args, kwargs, shape, where, f"Tensor.{name} is not understood on a channel path")

    # --- functional layers: an op on a layer's own parameters is that layer -----------------------
    def own_param(self, node, pos: int, name: str) -> str | None:
        """The state-dict key of the parameter or buffer given as argument `pos` / `name` of `node`
        (None: not given), if the op is its only reader: the rule may then resize it with the
        channels. Anything else raises _NotOwn with the reason."""
        a = node.args[pos] if len(node.args) > pos else node.kwargs.get(name)
        if a is None:
            return None
        if not isinstance(a, fx.Node) or a.op != "get_attr" or a.target not in self.state:
            raise _NotOwn(f"its {name} is computed, not a layer's own parameter")
        key = a.target
        owner = key.rpartition(".")[0]
        if key in self.shared:
            others = ", ".join(n for n in self.shared[key] if n != key)
            raise _NotOwn(f"its {name} {key} is shared with {others}")
        if self.calls.get(owner) or self.attr_reads[key] > 1:
            raise _NotOwn(f"its {name} {key} is also used elsewhere")
        ndim = len(self.state[key])
        for u in a.users:
            if u is not node and not _reads_only_kernel(u, ndim):
                raise _NotOwn(f"its {name} {key} is also read by {u.name}")
        return key

    def functional_layer(self, node, fn, args, kwargs, shape, where):
        """torch.nn.functional conv / linear / norm / embedding / prelu on a layer's own parameters
        (timm's norm+act layers, 'same'-padding conv subclasses): the torch.nn layer's rule, with the
        layer's parameters found from the op's arguments."""
        try:
            keys = {role: self.own_param(node, pos, role) for role, pos in FUNCTIONAL[fn].functional[fn].items()}
        except _NotOwn as e:
            reason = f"{_qualname(fn)}: {e}"
            out = self.unknown(args, kwargs, shape, where, reason)
            if fn in (F.conv1d, F.conv2d, F.conv3d, F.linear) and isinstance(out, TensorVal):
                # the layer's own output channels: listed as frozen, not just absent from the groups
                cdim = 1 if fn is not F.linear else len(shape) - 1
                w = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
                name = w.target.rpartition(".")[0] if isinstance(w, fx.Node) and w.op == "get_attr" else where
                sp = self.sp.new(shape[cdim], name)
                self.sp.freeze(sp, where, reason)
                return TensorVal(shape, cdim, ((sp, 1),))
            return out
        x = _arg(args, kwargs, 0, "input", None)
        path = next((k for k in keys.values() if k is not None), "").rpartition(".")[0]
        owner = self.model.get_submodule(path) if any(k is not None for k in keys.values()) else None
        rule = FUNCTIONAL[fn]
        numbers = rule.call_numbers(fn, keys, args, kwargs, x, owner, self.state)
        if isinstance(numbers, str):
            return self.unknown(args, kwargs, shape, where, f"{_qualname(fn)}: {numbers}")
        return rule.couple(self, path, x, shape, where, **numbers)

    # --- ints and sizes ---
    def int_op(self, args):
        if len(args) == 2 and all(isinstance(a, (tuple, list)) for a in args):  # shape tuples joined
            return tuple(args[0]) + tuple(args[1])
        chans, derived = [], []
        for a in args:
            if isinstance(a, _Int):
                if a.chan:
                    chans.append(a.chan)
                derived += list(a.derived)
            elif not isinstance(a, (int, float)):
                return None
        return _Int(None, tuple(chans + derived))

    def size_of(self, x, d):
        if not isinstance(x, TensorVal):
            return _Int()
        d = _norm_dim(d, len(x.shape))
        return _Int(chan=x.segs) if x.cdim is not None and d == x.cdim else _Int()

    def attr(self, x, name, shape, where):
        if not isinstance(x, TensorVal):
            return None
        if name == "shape":
            return _Size(x)
        if name == "ndim":
            return _Int()
        if name == "data":
            return self.unary(x, shape)
        if name in ("dtype", "device", "is_cuda", "requires_grad", "layout"):
            return None
        return self.unknown((x,), {}, shape, where, f"Tensor.{name} is not understood on a channel path")

    def getitem(self, x, idx, shape, where):
        if isinstance(x, _Size):
            if isinstance(idx, int):
                return self.size_of(x.t, idx)
            if isinstance(idx, slice):
                n = len(x.t.shape)
                return tuple(self.size_of(x.t, i) for i in range(n)[idx])
            return None
        if isinstance(x, (tuple, list)):
            return x[idx] if isinstance(idx, (int, slice)) else None
        if isinstance(x, dict):
            return x.get(idx)
        if not isinstance(x, TensorVal):
            return fixed_like(shape)
        return self.index(x, idx, shape, where)

    def index(self, x: TensorVal, idx, shape, where):
        """Basic indexing (ints, slices, None, ...): the channel axis must be taken whole."""
        if x.cdim is None:
            self.guard_ints(idx, {}, where)
            return TensorVal(shape)
        entries = idx if isinstance(idx, tuple) else (idx,)
        consumed = sum(1 for e in entries if isinstance(e, (int, slice)))
        d_in = d_out = 0
        new_c = None
        for e in entries:
            if e is None:
                d_out += 1
            elif e is Ellipsis:
                for _ in range(len(x.shape) - consumed):
                    if d_in == x.cdim:
                        new_c = d_out
                    d_in, d_out = d_in + 1, d_out + 1
            elif isinstance(e, int) and not isinstance(e, bool):
                if d_in == x.cdim:
                    self.freeze(x, where, "indexes into the channels")
                    return TensorVal(shape)
                d_in += 1
            elif isinstance(e, slice) and all(isinstance(v, int) or v is None for v in (e.start, e.stop, e.step)):
                if d_in == x.cdim:
                    # a stop at or past the end takes every channel, and still will when fewer remain
                    whole_stop = e.stop is None or e.stop >= x.shape[x.cdim]
                    if e.start not in (None, 0) or not whole_stop or e.step not in (None, 1):
                        self.freeze(x, where, "slices the channels")
                        return TensorVal(shape)
                    new_c = d_out
                d_in, d_out = d_in + 1, d_out + 1
            else:
                self.freeze((x, e), where, "indexes with a tensor or a computed bound")
                return fixed_like(shape)
        if new_c is None:
            new_c = d_out + (x.cdim - d_in)
        return TensorVal(shape, new_c, x.segs)

    # --- shapes ---
    def flatten(self, x, shape, start, end, where):
        if not isinstance(x, TensorVal) or x.cdim is None:
            return fixed_like(shape, origin_of(x))
        n = len(x.shape)
        start, end = _norm_dim(start, n), _norm_dim(end, n)
        c = x.cdim
        if c < start:
            return TensorVal(shape, c, x.segs)
        if c > end:
            return TensorVal(shape, c - (end - start), x.segs)
        if c != start:
            self.freeze(x, where, "flattens dims before the channels into them")
            return TensorVal(shape)
        block = _prod(x.shape[c + 1 : end + 1])
        return TensorVal(shape, start, tuple((sp, blk * block) for sp, blk in x.segs))

    def size_list(self, sizes) -> list:
        """Sizes given as ints, one tuple, or another tensor's .size()/.shape."""
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list, _Size)):
            sizes = sizes[0]
        if isinstance(sizes, _Size):
            return [self.size_of(sizes.t, i) for i in range(len(sizes.t.shape))]
        return list(sizes)

    def reshape(self, x, sizes, shape, where, node=None):
        if not isinstance(x, TensorVal) or x.cdim is None:
            self.guard_ints(sizes, {}, where)
            return fixed_like(shape)
        sizes = self.size_list(sizes)
        c, src = x.cdim, x.shape
        if len(shape) > len(src):
            # (-1, D) first: with one head left, (..., 1, D) also reads as D channels fixed in the code
            heads = self.split_heads(x, sizes, shape, node)
            if heads is not None:
                return heads
        pre = _prod(src[:c])
        for d in range(len(shape)):
            if _prod(shape[:d]) != pre:
                continue
            for k in range(c + 1, len(src) + 1):
                if shape[d] == _prod(src[c:k]):
                    return self.reshaped(x, sizes, shape, d, _prod(src[c + 1 : k]), where)
        heads = self.split_heads(x, sizes, shape, node)
        if heads is not None:
            return heads
        self.freeze(x, where, "reshapes the channel axis into several dims")
        return TensorVal(shape)

    def split_heads(self, x, sizes, shape, node):
        """The channel axis reshaped into (-1, D), as attention splits a projection into heads of D
        channels: each D consecutive channels become one unit (a head), whose count the -1 lets follow
        pruning while D stays. Only for a fresh layer's output read by this reshape alone."""
        c, src = x.cdim, x.shape
        d = next((i for i in range(len(shape) - 1) if _prod(shape[:i]) == _prod(src[:c])), None)
        if d is None or shape[d] * shape[d + 1] != src[c] or tuple(shape[d + 2 :]) != tuple(src[c + 1 :]):
            return None
        size = sizes[d + 1] if len(sizes) == len(shape) else None
        if not (isinstance(sizes[d], int) and sizes[d] == -1) or not isinstance(size, int) or isinstance(size, bool):
            return None
        if any(isinstance(s, _Int) and (s.chan or s.derived) for s in sizes):
            return None
        source = node.args[0] if node is not None and node.args else None
        if not isinstance(source, fx.Node) or len(source.users) != 1:
            return None
        segs = self.regroup(x.segs, size)
        return None if segs is None else TensorVal(shape, d, segs)

    def regroup(self, segs, size: int):
        """One space's units taken `size` at a time as new units (every record of the space follows);
        None unless `segs` is a single whole space of `size`-blocks that no other space has joined."""
        if len(segs) != 1 or segs[0][1] != 1:
            return None
        r = self.sp.find(segs[0][0])
        sp = self.sp.s[r]
        if r != segs[0][0] or sp.cut is not None or sp.frozen or sp.hidden or sp.width % size:
            return None
        if any(self.sp.find(i) == r for i in range(len(self.sp.s)) if i != r):
            return None
        self.recs = [
            _Rec(rec.space, rec.name, rec.dim, rec.offset, rec.block * size, rec.scored) if rec.space == r else rec
            for rec in self.recs
        ]
        self.counts = [(s, *rest, per * size) if s == r else (s, *rest, per) for s, *rest, per in self.counts]
        sp.width //= size
        return ((r, 1),)

    def reshaped(self, x, sizes, shape, d, block, where):
        ok = len(sizes) == len(shape)
        for i, s in enumerate(sizes):
            if i == d:
                if s == -1:
                    continue
                if block == 1 and isinstance(s, _Int) and s.chan is not None and self.align(s.chan, x.segs):
                    continue
                what = f"a channel count fixed in the code ({s})" if isinstance(s, int) else "a computed channel count"
                self.freeze((x, s), where, f"reshapes to {what}")
                ok = False
            elif isinstance(s, _Int) and (s.chan or s.derived):
                self.freeze((x, s), where, "reshapes with a size computed from a channel count")
                ok = False
        if not ok:
            self.freeze(x, where, "reshapes the channels")
            return TensorVal(shape)
        return TensorVal(shape, d, tuple((sp, blk * block) for sp, blk in x.segs))

    def expand(self, x, sizes, shape, where):
        sizes = self.size_list(sizes)
        if not isinstance(x, TensorVal) or x.cdim is None:
            self.guard_ints(sizes, {}, where)
            return fixed_like(shape)
        c = x.cdim + len(shape) - len(x.shape)
        for i, s in enumerate(sizes):
            if i == c and not (s == -1 or (isinstance(s, _Int) and s.chan is not None and self.align(s.chan, x.segs))):
                self.freeze((x, s), where, "expands the channels to a size fixed in the code")
                return TensorVal(shape)
            if i != c and isinstance(s, _Int) and (s.chan or s.derived):
                self.freeze((x, s), where, "expands with a size computed from a channel count")
                return TensorVal(shape)
        return TensorVal(shape, c, x.segs)

    def permute(self, x, dims, shape):
        if not isinstance(x, TensorVal) or x.cdim is None:
            return fixed_like(shape, origin_of(x))
        dims = [_norm_dim(d, len(x.shape)) for d in dims]
        return TensorVal(shape, dims.index(x.cdim), x.segs)

    def transpose(self, x, a, b, shape):
        if not isinstance(x, TensorVal) or x.cdim is None:
            return fixed_like(shape, origin_of(x))
        a, b = _norm_dim(a, len(x.shape)), _norm_dim(b, len(x.shape))
        c = b if x.cdim == a else a if x.cdim == b else x.cdim
        return TensorVal(shape, c, x.segs)

    def squeeze(self, x, dim, shape, where, unsqueeze: bool):
        if not isinstance(x, TensorVal) or x.cdim is None:
            return fixed_like(shape, origin_of(x))
        c = x.cdim
        if unsqueeze:
            d = _norm_dim(dim, len(shape))
            return TensorVal(shape, c + 1 if d <= c else c, x.segs)
        dims = (
            range(len(x.shape))
            if dim is None
            else [_norm_dim(d, len(x.shape)) for d in (dim if isinstance(dim, (tuple, list)) else (dim,))]
        )
        gone = [d for d in dims if x.shape[d] == 1]
        if c in gone:
            self.freeze(x, where, "squeezes the channel axis away")
            return TensorVal(shape)
        return TensorVal(shape, c - sum(1 for d in gone if d < c), x.segs)

    def flip(self, x, dims, shape, where):
        if not isinstance(x, TensorVal) or x.cdim is None:
            return fixed_like(shape, origin_of(x))
        dims = dims if isinstance(dims, (tuple, list)) else (dims,)
        if x.cdim in [_norm_dim(d, len(x.shape)) for d in dims]:
            self.freeze(x, where, "reverses the channel order")
            return TensorVal(shape)
        return TensorVal(shape, x.cdim, x.segs)

    def reduce(self, args, kwargs, shape, where):
        x = args[0]
        dim = _arg(args, kwargs, 1, "dim", None)
        if isinstance(dim, TensorVal):  # torch.max(a, b): elementwise
            return self.binary(x, dim, shape, where, "add")
        if not isinstance(x, TensorVal) or x.cdim is None:
            return fixed_like(shape, origin_of(x))
        pair = isinstance(shape, tuple) and bool(shape) and isinstance(shape[0], tuple)  # max(dim): (values, indices)
        out_shape = shape[0] if pair else shape
        if not isinstance(dim, (int, tuple, list)) or isinstance(dim, bool):
            self.freeze(x, where, "reduces over the channels")
            return fixed_like(shape)
        dims = [_norm_dim(d, len(x.shape)) for d in (dim if isinstance(dim, (tuple, list)) else (dim,))]
        if x.cdim in dims:
            self.freeze(x, where, "reduces over the channels")
            return fixed_like(shape)
        keep = len(out_shape) == len(x.shape)
        c = x.cdim if keep else x.cdim - sum(1 for d in dims if d < x.cdim)
        out = TensorVal(out_shape, c, x.segs)
        return (out, TensorVal(shape[1], c, x.segs)) if pair else out

    def binary(self, a, b, shape, where, kind):
        ta, tb = isinstance(a, TensorVal), isinstance(b, TensorVal)
        if not ta and not tb:
            return self.int_op((a, b)) if shape is None else fixed_like(shape)
        if not (ta and tb):
            x = a if ta else b
            if kind == "div" and not ta:  # scalar / tensor
                return self.unknown((a, b), {}, shape, where, "divides by a channel tensor")
            return self.unary(x, shape)
        if kind == "div" and b.cdim is not None:
            return self.unknown((a, b), {}, shape, where, "divides by a channel tensor (a removed channel is 0)")
        n = len(shape)
        ca = None if a.cdim is None else a.cdim + n - len(a.shape)
        cb = None if b.cdim is None else b.cdim + n - len(b.shape)
        if ca is not None and cb is not None:
            wa, wb = a.shape[a.cdim], b.shape[b.cdim]
            if ca == cb and wa == wb:
                if self.align(a.segs, b.segs):
                    return TensorVal(shape, ca, a.segs)
                self.freeze((a, b), where, "combines channels laid out differently")
                return TensorVal(shape)
            if ca == cb and 1 in (wa, wb):  # one side (a one-channel map) broadcast along the other's channels
                x, y = (b, a) if wa == 1 else (a, b)
                self.freeze(y, where, "broadcast along another tensor's channels")
                return TensorVal(shape, ca, x.segs)
            self.freeze((a, b), where, "combines tensors whose channels lie on different axes")
            return TensorVal(shape)
        x, other, cx = (a, b, ca) if ca is not None else (b, a, cb)
        if cx is None:
            return TensorVal(shape, origin=a.origin or b.origin)
        od = _bdim(cx, other, n)
        if od is None or other.shape[od] == 1:
            return TensorVal(shape, cx, x.segs)
        if other.param is not None:  # a parameter or buffer with one entry per channel (layer scale, bias)
            self.emit(other.param, od, x.segs, scored=True)
            return TensorVal(shape, cx, x.segs)
        src = f" (by {other.origin})" if other.origin else ""
        self.freeze(x, where, f"combined with a tensor whose channels are fixed{src}")
        return TensorVal(shape, origin=other.origin)

    def attention(self, args, kwargs, shape, where):
        """scaled_dot_product_attention with the heads on a batch dim of query, key and value: head h of
        the output reads head h of each, so the three join one space (a mask may only broadcast over it)."""
        q, k, v = (_arg(args, kwargs, i, n, None) for i, n in enumerate(("query", "key", "value")))
        mask = _arg(args, kwargs, 3, "attn_mask", None)
        if not all(isinstance(t, TensorVal) for t in (q, k, v)) or kwargs.get("enable_gqa"):
            return self.unknown(args, kwargs, shape, where, "attention with inputs the tracer cannot follow")
        if all(t.cdim is None for t in (q, k, v)):
            self.freeze(mask, where, "an attention mask with channels")
            return TensorVal(shape)
        c = q.cdim
        same = all(t.cdim == c and len(t.shape) == len(q.shape) for t in (k, v))
        if c is None or not same or c >= len(q.shape) - 2 or len(shape) != len(q.shape):
            return self.unknown(args, kwargs, shape, where, "attention over its channels (not over heads)")
        if isinstance(mask, TensorVal):
            md = _bdim(c, mask, len(shape))
            if mask.cdim is not None or (md is not None and mask.shape[md] != 1):
                return self.unknown(args, kwargs, shape, where, "an attention mask per head")
        if not (self.align(q.segs, k.segs) and self.align(q.segs, v.segs)):
            return self.unknown(args, kwargs, shape, where, "attention over heads laid out differently")
        return TensorVal(shape, c, q.segs)

    def matmul(self, a, b, shape, where):
        """A batched matrix product with the channels on the same batch dim of both (heads): per channel."""
        if not (isinstance(a, TensorVal) and isinstance(b, TensorVal)):
            return self.unknown((a, b), {}, shape, where, "matmul with something that is not a tensor")
        if a.cdim is None and b.cdim is None:
            return TensorVal(shape, origin=a.origin or b.origin)
        n = len(shape)
        batch = [
            t.cdim + n - len(t.shape) if t.cdim is not None and t.cdim < len(t.shape) - 2 else None for t in (a, b)
        ]
        if None not in batch and batch[0] == batch[1] and self.align(a.segs, b.segs):
            return TensorVal(shape, batch[0], a.segs)
        return self.unknown((a, b), {}, shape, where, "multiplies matrices over the channels")

    def softmax(self, x, dim, shape, where):
        if not isinstance(x, TensorVal) or x.cdim is None:
            return fixed_like(shape, origin_of(x))
        if not isinstance(dim, int) or _norm_dim(dim, len(x.shape)) == x.cdim:
            self.freeze(x, where, "normalizes over the channels (softmax)")
            return TensorVal(shape)
        return TensorVal(shape, x.cdim, x.segs)

    def cat(self, tensors, dim, shape, where):
        if not all(isinstance(t, TensorVal) for t in tensors):
            return self.unknown((tensors,), {}, shape, where, "concatenates something that is not a tensor")
        n = len(shape)
        dim = _norm_dim(dim, n)
        live = [t for t in tensors if t.cdim is not None]
        if not live:
            return TensorVal(shape)
        if all(t.cdim == dim for t in live):  # along the channels: side by side
            segs = ()
            for t in tensors:
                segs += self.layout(t, t.shape[dim], where)
            return TensorVal(shape, dim, segs)
        c = live[0].cdim
        if any(t.cdim != c for t in live) or c == dim:
            self.freeze(tensors, where, "concatenates tensors whose channels lie on different axes")
            return TensorVal(shape)
        for t in tensors:
            if t.cdim is None:
                if t.param is not None:
                    self.emit(t.param, c, live[0].segs, scored=False)
                else:
                    self.freeze(live, where, "concatenated with a tensor whose channel count is fixed")
                    return TensorVal(shape)
            elif t is not live[0] and not self.align(live[0].segs, t.segs):
                self.freeze(tensors, where, "concatenates tensors whose channels are laid out differently")
                return TensorVal(shape)
        return TensorVal(shape, c, live[0].segs)

    def chunk(self, x, chunks, dim, shape, where):
        if not isinstance(x, TensorVal) or x.cdim is None:
            return fixed_like(shape, origin_of(x))
        if _norm_dim(dim, len(x.shape)) != x.cdim:
            return tuple(TensorVal(s, x.cdim, x.segs) for s in shape)
        piece = self.chunk_layout(x.segs, chunks) if len(shape) == chunks else None
        if piece is None:
            self.freeze(x, where, f"chunks the channels into {chunks} pieces that cannot stay equal")
            return fixed_like(shape)
        return tuple(TensorVal(s, x.cdim, piece) for s in shape)

    def split(self, node, x, sizes, dim, shape, where):
        """A split of the channels at sizes read from a list attribute of the module that splits
        (timm's MixedConv2d: `torch.split(x, self.splits, 1)`): each piece is channels of its own,
        and compaction lowers the list's entries by the units removed from each piece
        (`Group.sizes`), so the pieces stay where the masked model had them. Sizes fixed anywhere
        else freeze the channels."""
        if not isinstance(x, TensorVal) or x.cdim is None:
            return fixed_like(shape, origin_of(x))
        if _norm_dim(dim, len(x.shape)) != x.cdim:
            return tuple(TensorVal(s, x.cdim, x.segs) for s in shape)
        attr = self.sizes_attribute(node, sizes)
        pieces = self.split_layout(x.segs, sizes) if attr is not None else None
        if pieces is None or len(pieces) != len(shape):
            self.freeze(x, where, "splits the channels at sizes fixed in the code")
            return fixed_like(shape)
        if any(c[1:3] == attr for c in self.counts):  # a second split at the same list: which does it count?
            self.freeze(x, where, f"splits the channels at {attr[1]}, which another split reads too")
            self.freeze_counted(attr, where)
            return fixed_like(shape)
        for i, piece in enumerate(pieces):
            self.counts += [(sp, *attr, i, blk) for sp, blk in piece]
        return tuple(TensorVal(s, x.cdim, piece) for s, piece in zip(shape, pieces))

    def freeze_counted(self, attr, where) -> None:
        for c in [c for c in self.counts if c[1:3] == attr]:
            self.sp.freeze(c[0], where, f"splits the channels at {attr[1]}, which another split reads too")
        self.counts = [c for c in self.counts if c[1:3] != attr]

    def sizes_attribute(self, node, sizes) -> tuple[str, str] | None:
        """(module path, attribute name) of the one list or tuple attribute of the module whose
        forward made `node` that equals `sizes` and lists the input channels of the module's conv
        children (surgery.split_list_names: timm's MixedConv2d.splits); None if there is not
        exactly one. Should the code split at other sizes that happen to be equal, the compacted
        model's split no longer adds up and its forward fails: loud, never wrong."""
        if not isinstance(sizes, (list, tuple)) or not sizes:
            return None
        if not all(type(v) is int and v > 0 for v in sizes):  # an _Int (computed from channels) or a bool
            return None
        stack = node.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else ""
        try:
            m = self.model.get_submodule(path)
        except AttributeError:
            return None
        # only a list a model rebuilt from its pruned weights recovers too (models.fit.load_resized)
        found = [k for k in split_list_names(m) if list(getattr(m, k)) == list(sizes)]
        return (path, found[0]) if len(found) == 1 else None

    def split_layout(self, segs, sizes):
        """The layout cut into consecutive pieces of `sizes` positions (cutting spaces at the piece
        boundaries); None if a boundary falls inside a block."""
        q = self._leaf_queue(segs)
        pieces = []
        for size in sizes:
            cur, pos = [], 0
            while pos < size:
                if not q:
                    return None
                leaf, blk = self._pop(q)
                w = self.sp.s[leaf].width * blk
                if w > size - pos:
                    if (size - pos) % blk:
                        return None
                    leaf, hi = self.sp.cut(leaf, (size - pos) // blk)
                    q.appendleft((hi, blk))
                    w = size - pos
                cur.append((leaf, blk))
                pos += w
            pieces.append(tuple(cur))
        return None if q else pieces

    # --- results ---------------------------------------------------------------------------------
    def result(self) -> TraceResult:
        by_leaf: dict[int, list[OffsetSlice]] = defaultdict(list)
        for rec in self.recs:
            for leaf, u in self.sp.leaves(rec.space):
                if self.sp.s[leaf].frozen is None:
                    s = OffsetSlice(
                        rec.name, rec.dim, block=rec.block, offset=rec.offset + u * rec.block, scored=rec.scored
                    )
                    if s not in by_leaf[leaf]:
                        by_leaf[leaf].append(s)
        counts: dict[int, list] = defaultdict(list)
        for sp, path, attr, i, per in self.counts:
            for leaf, _ in self.sp.leaves(sp):
                counts[leaf].append((path, attr, i, per))
        groups = []
        for leaf in sorted(by_leaf):
            sp = self.sp.s[leaf]
            if not any(s.scored for s in by_leaf[leaf]):
                sp.frozen = ("-", "no parameters of its own to score")
                continue
            sizes = tuple(counts[leaf])  # one entry per occurrence of the unit in a piece
            groups.append(Group(self.name_of(leaf), sp.width, self.simplify(by_leaf[leaf], sp.width), sizes=sizes))
        _check_disjoint(groups, self.state)
        frozen = []
        for i, sp in enumerate(self.sp.s):
            if sp.parent == i and sp.cut is None and sp.frozen is not None and not sp.hidden:
                frozen.append(Frozen(self.name_of(i), sp.width, sp.frozen[0], sp.frozen[1]))
        return TraceResult(groups, frozen)

    def name_of(self, leaf: int) -> str:
        """The producer's name; pieces of a space cut into independent parts are numbered in unit order."""
        if self._pieces is None:
            self._pieces = defaultdict(list)
            for i, x in enumerate(self.sp.s):
                if x.parent == i and x.cut is None:
                    self._pieces[x.name].append(x.start)
        sp = self.sp.s[leaf]
        pieces = sorted(self._pieces[sp.name])
        return sp.name if len(pieces) == 1 else f"{sp.name}[{pieces.index(sp.start)}]"

    def simplify(self, slices: list[OffsetSlice], width: int) -> list[Slice]:
        """Declared slice kinds where they say the same (a whole dim: plain/block; four equal gates)."""
        out: list[Slice] = []
        by_key = defaultdict(list)
        for s in slices:
            by_key[(s.name, s.dim, s.scored)].append(s)
        done = set()
        for s in slices:
            key = (s.name, s.dim, s.scored)
            if key in done:
                continue
            same = by_key[key]
            size = self.state[s.name][s.dim]
            if (
                len(same) == 4
                and all(x.block == 1 for x in same)
                and sorted(x.offset for x in same) == [0, width, 2 * width, 3 * width]
                and size == 4 * width
            ):
                out.append(Slice(s.name, s.dim, kind="gates", scored=s.scored))
                done.add(key)
                continue
            if s.offset == 0 and size == width * s.block:
                kind = "plain" if s.block == 1 else "block"
                out.append(Slice(s.name, s.dim, kind=kind, block=s.block, scored=s.scored))
            else:
                out.append(s)
        return out


def _has_state(m: nn.Module) -> bool:
    return any(True for _ in m.parameters()) or any(True for _ in m.buffers())


def _bdim(c: int, t: TensorVal, n: int) -> int | None:
    """Dim of `t` that broadcasting lines up with dim `c` of an n-dim result (None: t has no such dim)."""
    d = c - (n - len(t.shape))
    return d if d >= 0 else None


def _arg(args, kwargs, i: int, name: str, default):
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


class _NotOwn(Exception):
    """A functional layer op's tensor that is not a parameter the rule can resize with the channels."""


def _reads_only_kernel(u, ndim: int) -> bool:
    """Does node `u` read only dims 2 and up of an `ndim`-dim weight's shape (a conv's kernel size,
    as 'same' padding does)? Dims 0 and 1 are channel counts."""

    def beyond_channels(i) -> bool:
        if isinstance(i, int):
            return _norm_dim(i, ndim) >= 2
        if isinstance(i, slice) and i.step in (None, 1) and isinstance(i.start, int):
            return _norm_dim(i.start, ndim) >= 2
        return False

    if u.op == "call_method" and u.target == "size" and len(u.args) == 2:
        return beyond_channels(u.args[1])
    if u.op == "call_function" and u.target is getattr and u.args[1:] == ("shape",) and ndim > 2:
        return all(
            v.op == "call_function" and v.target is operator.getitem and beyond_channels(v.args[1]) for v in u.users
        )
    return False


def _ranges(s: Slice, width: int) -> list[tuple[int, int]]:
    """The index ranges a slice covers for all `width` units (traced slices are contiguous)."""
    if isinstance(s, OffsetSlice):
        return [(s.offset, s.offset + width * s.block)]
    if s.kind == "gates":
        return [(g * width, (g + 1) * width) for g in range(4)]
    return [(0, width * s.block)]


def _check_disjoint(groups: list[Group], state: dict) -> None:
    """No index of any tensor may belong to two units: that would make compaction wrong."""
    spans = defaultdict(list)
    for g in groups:
        for s in g.slices:
            spans[(s.name, s.dim)] += [(a, b, g.name) for a, b in _ranges(s, g.width)]
    for (name, dim), rs in spans.items():
        rs.sort()
        for (_, b0, g0), (a1, _, g1) in zip(rs, rs[1:]):
            if a1 < b0:
                raise RuntimeError(f"edgeprune's tracer gave an index of {name} to {g0} and {g1}; please report")
        if rs[-1][1] > state[name][dim]:
            raise RuntimeError(f"edgeprune's tracer went past the end of {name} (dim {dim}); please report")


def _user_frame(tb) -> str:
    """The innermost traceback frame outside torch and the tracers: where the model's own code failed."""
    skip = (str(Path(torch.__file__).parent), str(Path(__file__).parent))
    frames = [f for f in traceback.extract_tb(tb) if not f.filename.startswith(skip)]
    if not frames:
        return ""
    f = frames[-1]
    return f" at {Path(f.filename).name}:{f.lineno} in {f.name} (`{(f.line or '').strip()}`)"


def trace_groups(model: nn.Module, example_inputs, allow_norm_pruning: bool = False) -> TraceResult:
    """Trace `model` on `example_inputs` (a tensor or a tuple) and derive its prunable channel spaces.

    The graph is the forward of the model's current mode (train or eval). `allow_norm_pruning`
    lets LayerNorm over the channels be pruned (the result is then not equal to a masked model).
    """
    if torch.is_tensor(example_inputs):
        example_inputs = (example_inputs,)
    if all(torch.is_tensor(x) and x.dim() and x.shape[0] == 1 for x in example_inputs):
        # at batch 1 the batch dim looks like any size-1 dim (a reshape could merge it into the channels)
        example_inputs = tuple(torch.cat([x, x]) for x in example_inputs)
    with _attributes_kept(model):
        try:
            graph, constants, method = fx.symbolic_trace(model).graph, {}, "fx"
        except Exception as fx_error:  # noqa: BLE001 - fx cannot follow this model's Python: run it for real
            graph, constants, method = _concrete(model, example_inputs, fx_error), None, "concrete"
    if method == "fx":
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                ShapeProp(fx.GraphModule(model, graph)).propagate(*example_inputs)
        except Exception as e:  # noqa: BLE001
            first = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(". ")
            raise UserError(
                f"The example input does not run through {type(model).__name__} ({first}); pass one that does."
            ) from None
        finally:
            with torch.no_grad():
                for k, v in model.named_buffers():
                    v.copy_(buffers[k])
    else:
        graph, constants = graph
    c = _Coupling(model, graph, allow_norm_pruning, constants)
    c.run()
    result = c.result()
    result.method = method
    result.unused = _unused(model, graph)
    result.whole_note = whole_sublayers(model, result.groups, example_inputs)
    return result


@contextlib.contextmanager
def _attributes_kept(model: nn.Module):
    """A forward may store what it computes on the model (timm's attention-bias caches); traced, that
    is a proxy, which would break the model (a deepcopy, the next forward). Every module's plain
    attributes and the dicts, lists and sets among them are put back as they were."""
    saved = []
    for m in model.modules():
        attrs = {k: v for k, v in vars(m).items() if not k.startswith("_")}
        copies = {k: copy.copy(v) for k, v in attrs.items() if type(v) in (dict, list, set)}
        saved.append((m, attrs, copies))
    try:
        yield
    finally:
        for m, attrs, copies in saved:
            d = vars(m)
            for k in [k for k in d if not k.startswith("_") and k not in attrs]:
                del d[k]
            for k, v in attrs.items():
                if k in copies:
                    v.clear()
                    (v.update if isinstance(v, (dict, set)) else v.extend)(copies[k])
                d[k] = v


def _concrete(model: nn.Module, example_inputs: tuple, fx_error: Exception):
    """The concrete tracer's graph and constants (prune/concrete.py); a UserError naming the model's
    own line when neither tracer can follow it."""
    from edgeprune.prune.concrete import DataDependentBranch, concrete_trace

    buffers = {k: v.clone() for k, v in model.named_buffers()}
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            return concrete_trace(model, example_inputs)
    except DataDependentBranch as e:
        raise UserError(
            f"edgeprune cannot trace {type(model).__name__}{_user_frame(e.__traceback__)}: it {e}; "
            "make that code independent of tensor values or move it into a submodule."
        ) from None
    except Exception as e:  # noqa: BLE001
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(". ")
        fx_first = (str(fx_error).strip().splitlines() or [type(fx_error).__name__])[0].rstrip(". ")
        raise UserError(
            f"edgeprune cannot trace {type(model).__name__}: torch.fx stops{_user_frame(fx_error.__traceback__)} "
            f"({fx_first}), and running it on the example input fails{_user_frame(e.__traceback__)} ({first}); "
            "make that code work on the example input or move it into a submodule."
        ) from None
    finally:
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])


def _unused(model: nn.Module, graph: fx.Graph) -> list[str]:
    """Layers with parameters that the traced forward never calls nor reads."""
    used: set[str] = set()
    for n in graph.nodes:
        if n.op == "call_module":
            used.update(f"{n.target}.{k}" for k, _ in model.get_submodule(n.target).named_parameters())
        elif n.op == "get_attr":
            used.add(n.target)
    # a Linear left with no input or output (prune/sublayers.py) is traced into, and reads nothing
    empty = {
        f"{n}.{k}" for n, m in model.named_modules() if isinstance(m, EmptyLinear) for k, _ in m.named_parameters()
    }
    return sorted({k.rsplit(".", 1)[0] for k, _ in model.named_parameters() if k not in used and k not in empty})
