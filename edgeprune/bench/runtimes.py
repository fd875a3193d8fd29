"""The runtime seam: one small interface over onnxruntime, OpenVINO and ncnn, registered by name.

A runtime opens a model file into a `Session` with a thread count, runs a feed (name -> array,
batch first) into a list of output arrays, and opens its own per-call floor: the cheapest model it
can run on the same inputs (an Identity), so a row's floor is that runtime's own overhead. Bench's
worker, export's parity check and deploy/predict.py all go through `get(name)`. No torch here, and
no runtime package is imported until a session is opened: a missing one is a sentence, not a crash.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeprune.bench import feeds, onnxfile
from edgeprune.bench.identity import identity_model

DEFAULT = "onnxruntime"
# Parity of a float (fp32) variant on another runtime against onnxruntime's outputs on the same inputs:
# kernels differ in summation order and algorithm (Winograd). Beyond this the runtime is refused for that
# model. A variant in bf16/fp16 (`Runtime.lowered`) is lossy by design and judged on accuracy, like INT8.
PARITY_RTOL = 1e-2  # max abs logit difference, relative to the largest |logit| (at least 1)
PARITY_MIN_AGREEMENT = 0.99  # top-1 agreement on the eval set
PRECISIONS = ("fp32", "bf16", "fp16")  # what a variant may ask a runtime to compute float layers in


class RuntimeMissing(ImportError):
    """The runtime's package is not installed; the message says how to install it."""


@dataclass
class Session:
    """A model opened on a runtime: what bench, parity and predict need of it."""

    inputs: list[feeds.InputSpec]
    metadata: dict | None
    options: dict  # what the JSON records of how the session was made
    run: object  # feed dict -> list of np.ndarray
    keep: list = field(default_factory=list)  # objects the runtime needs alive (ncnn Mats)
    # The precision the runtime computes float layers in: "fp32", or "bf16"/"fp16" when a variant asked for
    # it (`open(..., precision=)`) and the runtime took it on this CPU; None: not reported.
    precision: str | None = None


class Runtime:
    """One inference runtime. Subclasses fill in `_open`, `_floor` and `_version`."""

    name = ""
    module = ""  # the import name
    extra: str | None = None  # pyproject extra that installs it
    suffixes: tuple[str, ...] = (".onnx",)  # model files it reads
    int8: str = ""  # how an INT8 variant is made for it, or why there is none (docs and export output)

    def lowered(self) -> tuple[str, ...]:
        """The precisions below fp32 this runtime can compute float layers in on this CPU ("bf16", "fp16"):
        each is a variant of its own, judged on accuracy like INT8 (none: the runtime has no such mode)."""
        return ()

    def missing(self) -> str | None:
        """None when the package imports, else one sentence naming the fix."""
        try:
            importlib.import_module(self.module)
        except ImportError:
            return f"{self.name} is not installed: pip install 'edgeprune[{self.extra}]'"
        return None

    def load_module(self):
        """The runtime's package, imported; RuntimeMissing (naming the extra) when it is not installed."""
        why = self.missing()
        if why:
            raise RuntimeMissing(why)
        return importlib.import_module(self.module)

    def version(self) -> str | None:
        """The installed package's version, None when it is not installed."""
        return None if self.missing() else self._version(self.load_module())

    def reads(self, path: Path) -> bool:
        """Whether this runtime opens a file with `path`'s suffix."""
        return any(str(path).endswith(s) for s in self.suffixes)

    def open(self, path: Path, threads: int, source: Path | None = None, **options) -> Session:
        """`path` opened with `threads` intra-op threads. `source` is the ONNX file the model was
        converted from (its inputs and edgeprune metadata, for files that do not carry them).
        `precision=` ("fp32", the default, or one of `lowered()`) is what float layers compute in:
        every runtime computes in fp32 unless a variant asks for less, whatever the runtime's own default.
        A CPU without the lower precision runs fp32; `Session.precision` says which ran."""
        precision = options.get("precision") or "fp32"
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; edgeprune knows {', '.join(PRECISIONS)}")
        # a bundle made on another CPU may ask for what this one lacks: fp32 then, and the session says so
        options["precision"] = precision if precision == "fp32" or precision in self.lowered() else "fp32"
        if not self.reads(Path(path)):
            raise ValueError(f"{self.name} reads {' or '.join(self.suffixes)} files, not {Path(path).name}")
        return self._open(self.load_module(), Path(path), threads, Path(source) if source else None, options)

    def floor(self, inputs: list[feeds.InputSpec], threads: int) -> Session:
        """The per-call floor on this runtime: an Identity over `inputs`."""
        return self._floor(self.load_module(), inputs, threads)

    def _open(self, mod, path: Path, threads: int, source: Path | None, options: dict) -> Session:
        raise NotImplementedError

    def _floor(self, mod, inputs: list[feeds.InputSpec], threads: int) -> Session:
        raise NotImplementedError

    def _version(self, mod) -> str:
        return str(getattr(mod, "__version__", "unknown"))


def _onnx_specs(path: Path) -> list[feeds.InputSpec]:
    shapes, types = onnxfile.input_shapes(path) or {}, onnxfile.input_types(path) or {}
    return [feeds.InputSpec(n, types.get(n, "tensor(float)"), s) for n, s in shapes.items()]


def _onnx_metadata(path: Path | None) -> dict | None:
    return feeds.read_metadata(onnxfile.metadata_props(path)) if path is not None and path.suffix == ".onnx" else None


class OnnxRuntime(Runtime):
    name, module, extra = "onnxruntime", "onnxruntime", None
    int8 = "onnxruntime.quantization: static QDQ or dynamic INT8, chosen by `edgeprune export`"

    def missing(self) -> str | None:
        try:
            importlib.import_module(self.module)
        except ImportError:
            return "onnxruntime is not installed: pip install edgeprune"
        return None

    @staticmethod
    def session_options(ort, threads: int, arena: bool = True, mem_pattern: bool = True):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.enable_cpu_mem_arena = arena
        so.enable_mem_pattern = mem_pattern
        so.log_severity_level = 3  # warnings would interleave with the parent's table
        return so

    def _wrap(self, sess, so) -> Session:
        specs = [feeds.InputSpec(i.name, i.type, tuple(i.shape)) for i in sess.get_inputs()]
        options = {
            "intra_op_num_threads": so.intra_op_num_threads,
            "inter_op_num_threads": so.inter_op_num_threads,
            "execution_mode": str(so.execution_mode).split(".")[-1],
            "graph_optimization_level": str(so.graph_optimization_level).split(".")[-1],
            "enable_cpu_mem_arena": so.enable_cpu_mem_arena,
            "enable_mem_pattern": so.enable_mem_pattern,
            "providers": sess.get_providers(),
        }
        meta = feeds.read_metadata(sess.get_modelmeta().custom_metadata_map)
        return Session(specs, meta, options, lambda feed: sess.run(None, feed), keep=[sess], precision="fp32")

    def _open(self, ort, path, threads, source, options):
        so = self.session_options(ort, threads, options.get("arena", True), options.get("mem_pattern", True))
        return self._wrap(ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]), so)

    def _floor(self, ort, inputs, threads):
        so = self.session_options(ort, threads)
        model = identity_model([(s.name, s.ort_type, len(s.shape)) for s in inputs])
        return self._wrap(ort.InferenceSession(model, so, providers=["CPUExecutionProvider"]), so)


_OV_PRECISION = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}  # OpenVINO's type names, in edgeprune's words
_OV_HINT = {v: k for k, v in _OV_PRECISION.items()}  # and back: edgeprune's precision -> OpenVINO's hint
_OV_CAPABILITY = {"BF16": "bf16", "FP16": "fp16"}  # OPTIMIZATION_CAPABILITIES that allow a lower precision
_OV_TYPES = {"f32": "tensor(float)", "f16": "tensor(float16)", "i64": "tensor(int64)", "i32": "tensor(int32)"}


class OpenVino(Runtime):
    name, module, extra = "openvino", "openvino", "openvino"
    suffixes = (".onnx", ".xml")  # ONNX read directly; IR (.xml + .bin) as export writes its INT8 variant
    int8 = "NNCF post-training quantization of the float model on the bundle's calibration rows (OpenVINO IR)"

    def lowered(self) -> tuple[str, ...]:
        if self.missing():
            return ()
        caps = self.load_module().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        return tuple(p for cap, p in _OV_CAPABILITY.items() if cap in caps)

    def _compile(self, ov, model, threads: int, precision: str = "fp32"):
        # The precision is always set: OpenVINO's own default is bf16 on CPUs with AVX-512 BF16 or AMX.
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": _OV_HINT[precision],
        }
        compiled = ov.Core().compile_model(model, "CPU", config)
        request = compiled.create_infer_request()
        outputs = list(compiled.outputs)

        def run(feed):
            result = request.infer(feed)
            return [np.array(result[o]) for o in outputs]

        options = {
            **{k: str(v) for k, v in config.items()},
            "device": "CPU",
            "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
        }
        return compiled, run, options

    def _open(self, ov, path, threads, source, options):
        model = ov.Core().read_model(str(path))
        specs = []
        for port in model.inputs:
            shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
            specs.append(
                feeds.InputSpec(
                    port.get_any_name(), _OV_TYPES.get(port.get_element_type().get_type_name(), "tensor(float)"), shape
                )
            )
        compiled, run, opts = self._compile(ov, model, threads, options["precision"])
        meta = _onnx_metadata(path) or _onnx_metadata(source)
        precision = _OV_PRECISION.get(opts["inference_precision"], opts["inference_precision"])
        return Session(specs, meta, opts, run, keep=[compiled], precision=precision)

    def _floor(self, ov, inputs, threads):
        model = ov.Core().read_model(identity_model([(s.name, s.ort_type, len(s.shape)) for s in inputs]), b"")
        compiled, run, opts = self._compile(ov, model, threads)
        return Session(list(inputs), None, opts, run, keep=[compiled])

    def _version(self, ov) -> str:
        return ov.get_version().split("-")[0]


class Ncnn(Runtime):
    name, module, extra = "ncnn", "ncnn", "ncnn"
    suffixes = (".ncnn.param",)  # + .ncnn.bin beside it; converted from the ONNX file by pnnx at export
    int8 = (
        "ncnn's INT8 needs its ncnn2table and ncnn2int8 tools, which the ncnn and pnnx wheels do not ship; "
        "build them from the ncnn sources to make one"
    )

    def lowered(self) -> tuple[str, ...]:
        # ncnn stores activations in fp16 on ARM (NEON with VFPv4, or the fp16 extension, which also computes
        # in it); on x86 its fp16 options change only how some InnerProduct weights are stored, so x86 has no
        # fp16 variant (benchmarks/results/runtimes_avx512.json: on six CNNs the same max|diff| and top-1
        # agreement with the options on and off).
        if self.missing():
            return ()
        ncnn = self.load_module()
        return ("fp16",) if ncnn.cpu_support_arm_vfpv4() or ncnn.cpu_support_arm_asimdhp() else ()

    @staticmethod
    def _net(ncnn, threads: int, precision: str = "fp32"):
        net = ncnn.Net()
        net.opt.num_threads = threads
        net.opt.use_vulkan_compute = False
        # ncnn's own default stores in fp16 where it can; a float variant asks for fp32 throughout
        half = precision == "fp16"
        net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = half
        net.opt.use_bf16_storage = False
        return net

    @staticmethod
    def _runner(ncnn, net, in_names, out_names):
        # ncnn's Mat holds no batch axis: a batch of B is B extractions, each of one example.
        def run(feed):
            arrays = [np.asarray(feed[name]) for name in in_names]
            outs: list[list[np.ndarray]] = [[] for _ in out_names]
            for i in range(len(arrays[0])):
                ex = net.create_extractor()
                mats = []
                for blob, arr in zip(net.input_names(), arrays):
                    row = np.ascontiguousarray(arr[i], dtype=np.float32)  # ncnn blobs are float; ids too
                    mats.append((row, ncnn.Mat(row)))  # the array must outlive the Mat that views it
                    ex.input(blob, mats[-1][1])
                for j, blob in enumerate(out_names):
                    ret, mat = ex.extract(blob)
                    if ret != 0:
                        raise RuntimeError(f"ncnn could not compute {blob} (error {ret})")
                    outs[j].append(np.array(mat).reshape(-1).copy())
            return [np.stack(o) for o in outs]

        return run

    def _open(self, ncnn, path, threads, source, options):
        if source is None or not Path(source).is_file():
            raise ValueError(f"{path.name} needs the ONNX file it was converted from (its inputs) beside it")
        specs = _onnx_specs(Path(source))
        net = self._net(ncnn, threads, options["precision"])
        bin_path = path.with_name(companion(path.name))
        if net.load_param(str(path)) != 0 or net.load_model(str(bin_path)) != 0:
            raise RuntimeError(
                f"ncnn cannot load {path.name} (a layer it does not implement, or a damaged {bin_path.name}); "
                "its stderr names the layer"
            )
        if len(net.input_names()) != len(specs):
            raise RuntimeError(f"{path.name} takes {len(net.input_names())} inputs but {source.name} {len(specs)}")
        names = [s.name for s in specs]
        opts = {
            "num_threads": threads,
            "use_vulkan_compute": False,
            "use_fp16_storage": net.opt.use_fp16_storage,
            "use_bf16_storage": net.opt.use_bf16_storage,
            "one_example_per_call": True,
        }
        run = self._runner(ncnn, net, names, net.output_names())
        return Session(specs, _onnx_metadata(source), opts, run, keep=[net], precision=options["precision"])

    def _floor(self, ncnn, inputs, threads):
        # An ncnn graph of Input layers only: extracting an input blob is the cheapest call ncnn has.
        lines = [f"Input in{i} 0 1 in{i}" for i in range(len(inputs))]
        net = self._net(ncnn, threads)
        net.load_param_mem("7767517\n" + f"{len(lines)} {len(lines)}\n" + "\n".join(lines) + "\n")
        names = [s.name for s in inputs]
        run = self._runner(ncnn, net, names, [f"in{i}" for i in range(len(inputs))])
        return Session(list(inputs), None, {"num_threads": threads, "one_example_per_call": True}, run, keep=[net])


RUNTIMES: dict[str, Runtime] = {r.name: r for r in (OnnxRuntime(), OpenVino(), Ncnn())}


def companion(file: str) -> str:
    """The weights file beside a converted model (.ncnn.param -> .ncnn.bin, .xml -> .bin); itself for ONNX."""
    if file.endswith(".param"):
        return file.removesuffix(".param") + ".bin"
    if file.endswith(".xml"):
        return file.removesuffix(".xml") + ".bin"
    return file


def label(runtime: str, precision: str | None) -> str:
    """A runtime as tables and ship lines name it: with its precision when it computed float layers in
    less than fp32 ("openvino bf16"), so a lowered precision is never silent."""
    return f"{runtime} {precision}" if precision not in (None, "fp32") else runtime


def get(name: str) -> Runtime:
    """The registered runtime `name`; a ValueError listing the known ones otherwise."""
    try:
        return RUNTIMES[name]
    except KeyError:
        raise ValueError(f"unknown runtime {name!r}; edgeprune knows {', '.join(RUNTIMES)}") from None


def parse(text: str | None) -> tuple[str, ...] | None:
    """'onnxruntime,openvino' -> the names, checked; 'all' -> every registered runtime; None stays None."""
    from edgeprune.errors import UserError

    if text is None:
        return None
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if names == ["all"]:
        return tuple(RUNTIMES)
    unknown = [n for n in names if n not in RUNTIMES]
    if not names or unknown:
        raise UserError(
            f"unknown --runtime {', '.join(unknown) or repr(text)}; choose from {', '.join(RUNTIMES)} (or all), "
            "separated by commas."
        )
    return tuple(dict.fromkeys(names))


def run_all(session: Session, x: np.ndarray, chunk: int = 256) -> np.ndarray:
    """The first output of `session` on every row of model-ready `x` (one input, or a pretrained text
    model's packed ids and masks, split as feeds.model_feed splits them), in chunks."""
    dtypes = {s.name: s.dtype for s in session.inputs}

    def feed(rows: np.ndarray) -> dict[str, np.ndarray]:
        split = feeds.model_feed(list(dtypes), rows)
        return {k: np.ascontiguousarray(v, dtype=dtypes[k]) for k, v in split.items()}

    outs = [session.run(feed(x[i : i + chunk]))[0] for i in range(0, len(x), chunk)]
    return np.concatenate(outs) if outs else np.zeros((0, 1), np.float32)


def parity(out: np.ndarray, ref: np.ndarray) -> dict:
    """How far a runtime's logits are from the reference ones on the same rows: max abs diff, top-1
    agreement (the sign for one-logit models), and whether both are within tolerance."""
    from edgeprune.bench.metrics import predictions

    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    if out.shape != ref.shape:
        out = out.reshape(ref.shape) if out.size == ref.size else out
    if out.shape != ref.shape:
        return {
            "max_abs_diff": None,
            "top1_agreement": 0.0,
            "tolerance": None,
            "ok": False,
            "reason": f"outputs of shape {out.shape}, expected {ref.shape}",
        }
    diff = float(np.abs(out - ref).max()) if out.size else 0.0
    tol = PARITY_RTOL * max(1.0, float(np.abs(ref).max()) if ref.size else 1.0)
    agree = float((predictions(out) == predictions(ref)).mean()) if len(ref) else 1.0
    ok = bool(np.isfinite(diff) and diff <= tol and agree >= PARITY_MIN_AGREEMENT)
    reason = (
        None
        if ok
        else (
            f"its outputs differ from onnxruntime's by {diff:.2e} (tolerance {tol:.2e}) and agree on "
            f"{agree:.1%} of top-1 classes (at least {PARITY_MIN_AGREEMENT:.0%} needed)"
        )
    )
    return {"max_abs_diff": diff, "top1_agreement": agree, "tolerance": tol, "ok": ok, "reason": reason}
