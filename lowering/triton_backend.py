"""The ``triton`` backend: generated Triton kernels, called from PyTorch.

``einattn.compile(spec, backend="triton")`` builds a :class:`TritonKernel`:

1. **Pass reduction** (``passes="auto"``, the default): the fewest-pass form the rewrite can prove
   (``einattn.rewrite.auto_rewrite``); ``passes="as-written"`` keeps the spec's own cascade.
2. **Path**: a 1-pass cascade over a streamed rank becomes one fused kernel (``triton_fused``); anything else,
   or ``path="general"``, one kernel per Einsum (``triton_general``). ``kernel.plan`` says which and why.
3. **Source**: a complete module that needs only torch and triton (``triton_module``); ``kernel.source`` is
   its text and :func:`standalone_source` is what ``einattn compile --backend triton`` writes. It is loaded
   from a cache file named by its hash (Triton needs a file to read kernel source from).
4. **Call**: a ``torch.library.custom_op`` (one per generated module) with a fake implementation, so the
   kernel works inside ``torch.compile`` graphs; its backward runs generated kernels for the derived
   backward cascade (``triton_backward``), else recomputes through the ``torch`` backend.

Sizes are runtime arguments everywhere: calling with other sequence lengths reuses the same source, module and
(on a GPU) compiled binaries; ``kernel.generations`` counts sources generated for this kernel (always 1).

Options: ``passes`` ("auto" | "as-written"), ``path`` ("auto" | "fused" | "general"), ``tile`` (the rewrite's
tile size, default 64), ``skip_tiles`` (default True: narrow the fused loop to the tiles a filter allows),
``dtype`` (accepted for symmetry with the CLI; the outputs follow the inputs' dtype),
``smem_limit`` / ``register_limit`` (enforce resource limits, e.g. to test the error under the interpreter).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from einattn.errors import EinError
from einattn.ir import Program, renamed
from einattn.kernel import Kernel
from einattn.sizes import bind_sizes
from einattn.stabilizers import floored

from .triton_backward import CHOICES as BACKWARDS
from .triton_fused import Refusal
from .triton_fused_module import fused_module
from .triton_general import general_module
from .triton_module import module_name, spec_name

OPTIONS = (
    "passes",
    "path",
    "tile",
    "skip_tiles",
    "dtype",
    "smem_limit",
    "register_limit",
    "backward",
    "float32",
)
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


@dataclass(frozen=True)
class Plan:
    """How a program was compiled: ``path`` is ``fused`` or ``general``; ``reason`` why not fused."""

    path: str
    detail: str
    reason: str | None = None
    passes: str = "as-written"

    def __str__(self) -> str:
        text = f"{self.path}: {self.detail}"
        if self.reason:
            text += f"\nnot fused: {self.reason}"
        return text


def _prepare(program: Program, options: dict, stream: bool = True) -> tuple[Program, list]:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise EinError(
            f"unknown option `{unknown[0]}` for the triton backend", hint=f"options: {', '.join(OPTIONS)}"
        )
    path = options.get("path", "auto")
    if path not in ("auto", "fused", "general"):
        raise EinError(f"path must be 'auto', 'fused' or 'general', got {path!r}")
    if options.get("backward", "auto") not in BACKWARDS:
        raise EinError(
            f"option backward must be one of {', '.join(map(repr, BACKWARDS))}, got {options['backward']!r}",
            hint="'auto': generated backward kernels where einattn derives them, else the torch backend; "
            "'derived': the generated kernels, an error where there are none; 'torch': never",
        )
    if not isinstance(options.get("skip_tiles", True), bool):
        raise EinError(f"option skip_tiles must be True or False, got {options['skip_tiles']!r}")
    for limit in ("smem_limit", "register_limit"):
        value = options.get(limit, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise EinError(f"option {limit} must be a positive integer, got {value!r}")
    dtype = options.get("dtype")
    if dtype is not None and str(dtype).removeprefix("torch.") not in FLOAT_DTYPES:
        raise EinError(
            f"option dtype must be one of {', '.join(FLOAT_DTYPES)} (or None), got {dtype!r}",
            hint="the triton backend computes in the inputs' dtype; the option is accepted for the CLI",
        )
    from einattn.rewrite import for_backend

    program, found = for_backend(program, options.get("passes", "auto"), options.get("tile", 64), stream)
    return program, found


def _form(program: Program, original: Program) -> tuple[str, str]:
    """(the plan's ``passes``, the module header's form) of the program compiled for ``original``."""
    if program is original:
        return "as-written", "as written"
    return "rewritten", "rewritten by einattn.rewrite"


def _in_spec_names(refusal: Refusal, names: dict) -> Refusal:
    """``refusal`` speaking of the spec's tensors, not of their names in generated code (``t_X``)."""
    spec = {v: k for k, v in names.items()}

    def name(code: str) -> str:
        if code in spec:
            return spec[code]
        # a statement the fused path made (lowering.triton_split's `t_LDEN_S`): its tensor's name, extended
        cut = max((k for k in range(len(code)) if code[k] == "_" and code[:k] in spec), default=None)
        return code if cut is None else spec[code[:cut]] + code[cut:]

    return Refusal(re.sub(r"\bt\d*_\w+", lambda m: name(m[0]), refusal.reason), refusal.span)


def _in_code(program: Program, original: Program) -> tuple[dict, Program, frozenset]:
    """Tensor names in generated code (:func:`safe_names`), the program under them, and the running maxes
    that are stored finite: the rewrite's (stabilizers.floored); a spec as written keeps its own."""
    names = safe_names(program)
    floor = floored(program) if program is not original else frozenset()
    return names, renamed(program, names), frozenset(names[x] for x in floor)


SAFE_PREFIX = "t_"  # of the tensors' names in generated code: no name of the kernels' own starts with it


def safe_names(program: Program) -> dict[str, str]:
    """The name of each tensor in generated code: ``t_X`` for tensor ``X``. The kernels derive names from
    it by suffixes (``t_X_ok``, ``t_X_next``, ``t_X_ptr``, ``t_X_stride0``, ``t_X_present``, ``t_X_kernel``,
    ``t_X_3``), so a tensor named ``X_<anything>`` beside ``X`` (``RM_next`` beside ``RM``, or ``SLN_ok``
    that the rewrite derives from a natural ``SN_ok``) is ``t1_X_...`` instead, ``t2_`` for the next one:
    no derived name of one tensor is another's name."""
    names = [t.name for t in program.tensors]
    out: dict[str, str] = {}
    k = 0
    for n in names:
        if any(n.startswith(o + "_") for o in names if o != n):
            k += 1
            out[n] = f"t{k}_{n}"
        else:
            out[n] = SAFE_PREFIX + n
    return out


def _float32_names(value, program: Program) -> tuple[str, ...]:
    """Option ``float32``: names of inputs and outputs kept in float32 at least (one name, or several)."""
    names = (value,) if isinstance(value, str) else value
    if not isinstance(names, (tuple, list)) or not all(isinstance(n, str) for n in names):
        raise EinError(
            f"option float32 takes names of inputs and outputs, got {value!r}",
            hint="float32=('GM', 'SD'): a tuple of tensor names",
        )
    known = (*program.inputs, *program.outputs)
    for n in names:
        if n not in known:
            raise EinError(
                f"option float32: `{n}` is not an input or an output of the spec",
                hint=f"its inputs and outputs: {', '.join(known)}",
            )
    return tuple(dict.fromkeys(names))


def build(program: Program, **options) -> tuple[str, Plan, Program, str]:
    """(module source, plan, compiled program, launcher name) for ``program``."""
    original = program
    program, found = _prepare(program, options)
    for w in found:
        warnings.warn(w, stacklevel=4)
    name = module_name(original)
    shown = {k: v for k, v in options.items() if k in ("passes", "path", "tile", "skip_tiles")}
    if options.get("float32"):  # (the header names them; the tables keep them in float32)
        shown["float32"] = _float32_names(options["float32"], original)
    shown["spec"] = spec_name(original)
    passes, shown["form"] = _form(program, original)
    path = options.get("path", "auto")
    # generated code names tensor X t_X: a spec may name a tensor `torch`, `tl`, `size_p` or a helper's name
    # (the launcher's parameters keep the spec's names, see triton_module.public_launcher)
    names, safe, floor = _in_code(program, original)
    refusal = None
    if path != "general":
        res = fused_module(safe, shown, name, floor, public=program)
        if not isinstance(res, Refusal):
            src, fplan = res
            return src, Plan("fused", fplan.describe(), None, passes), program, name
        refusal = res = _in_spec_names(res, names)
        if path == "fused":
            raise EinError(f"the triton backend cannot fuse {original.name}: {res.reason}", res.span)
    if refusal is not None or path == "general":
        # the general path runs one kernel per Einsum: sums streamed over tiles (rule 3) would be one
        # launch per tile there, so it computes them whole, as the form without that rule has them
        plain, _ = _prepare(original, options, stream=False)
        if plain is not program:
            program = plain
            passes, shown["form"] = _form(program, original)
            names, safe, floor = _in_code(program, original)
            if refusal is not None:  # why this form does not fuse, and why the streamed one did not
                res = fused_module(safe, shown, name, floor, public=program)
                if isinstance(res, Refusal):
                    res, streamed = _in_spec_names(res, names), refusal.reason
                    refusal = Refusal(
                        f"{res.reason}; with its sums streamed over tiles: {streamed}", res.span
                    )
    reason = str(refusal) if refusal else None
    if reason and options.get("passes", "auto") == "as-written":
        reason += " (passes='auto' lets the rewrite try to derive the 1-pass form)"
    elif reason and found and program is not original:
        reason += f" (the rewrite stopped short of 1 pass: {'; '.join(w.message for w in found)})"
    elif reason and program is original:
        why = (
            "; ".join(w.message for w in found)
            if found
            else "nothing to rewrite, no rank is re-read after a full reduction"
        )
        reason += f" (the rewrite derived no 1-pass form: {why})"
    if reason:
        shown["note"] = f"Not fused: {reason}"
    src, gplan = general_module(safe, shown, name, floor, public=program)
    detail = f"{len(gplan.statements)} kernels, one per Einsum, intermediates in global memory"
    return src, Plan("general", detail, reason, passes), program, name


def standalone_source(program: Program, **options) -> str:
    """The standalone module (torch and triton only) that ``einattn compile --backend triton`` writes."""
    return build(program, **options)[0]


# ---- loading the generated module -------------------------------------------------------------------


def cache_dir() -> Path:
    base = os.environ.get("EINATTN_CACHE_DIR") or os.path.join(
        tempfile.gettempdir(), f"einattn-{os.getuid()}"
    )
    path = Path(base) / "triton"
    path.mkdir(parents=True, exist_ok=True)
    return path


_MODULES: dict[str, object] = {}


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter (``TRITON_INTERPRET=1``), read as Triton reads it.

    Plain ``os.environ`` so that torch.compile can trace a call (it cannot trace ``triton.knobs``)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on", "y")


def load_module(source: str, name: str):
    """Import ``source`` from a file named by its hash (once per process per source and interpreter mode:
    ``triton.jit`` decides at import whether the kernels are interpreted)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    key = f"einattn_triton_{name}_{digest}" + ("_interpreted" if interpreting() else "")
    if key in _MODULES:
        return _MODULES[key]
    path = cache_dir() / f"einattn_triton_{name}_{digest}.py"
    if not path.exists() or path.read_text(encoding="utf-8") != source:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(source, encoding="utf-8")
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    _MODULES[key] = module
    return module


# ---- the custom op -------------------------------------------------------------------------------------

_OPS: dict[str, object] = {}


def _custom_op(key: str, kernel: TritonKernel):
    """``einattn::<key>``: forward through the generated launcher, backward through the torch backend."""
    if key in _OPS:
        return _OPS[key]
    import torch
    from torch.library import custom_op

    module, launcher = kernel.module, kernel.launcher
    names = kernel.program.inputs

    def launch(xs):
        try:
            with torch.no_grad():  # (the op's own backward recomputes: see below)
                return launcher(*xs)
        except ValueError as e:  # no launch configuration fits (checked here inside a compiled graph)
            raise EinError(f"{kernel.program.name}: {e}") from None

    @custom_op(f"einattn::{key}", mutates_args=(), schema="(Tensor[] xs) -> Tensor[]")
    def forward(xs):
        if interpreting():  # the interpreter runs masked lanes in NumPy too: exp overflowing there, 0 / 0
            # where a lane is absent, warn about values that the kernel then discards
            import numpy as np

            with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
                outs = launch(xs)
        else:
            outs = launch(xs)
        return list(outs) if isinstance(outs, tuple) else [outs]

    @forward.register_fake
    def _(xs):
        inputs = dict(zip(names, xs))
        sizes = module._sizes(inputs)
        dtype = module._float_dtype(inputs)
        wide = torch.promote_types(dtype, torch.float32)
        kept = [o in module.FLOAT32 for o in module.OUTPUTS]
        shapes = module.output_shapes(sizes)
        return [xs[0].new_empty(s, dtype=wide if k else dtype) for s, k in zip(shapes, kept)]

    @custom_op(
        f"einattn::{key}_backward",
        mutates_args=(),
        schema="(Tensor[] xs, Tensor[] outs, Tensor[] grads, bool[] wanted) -> Tensor[]",
    )
    def backward(xs, outs, grads, wanted):
        return kernel.gradients(xs, outs, grads, wanted)

    @backward.register_fake
    def _(xs, outs, grads, wanted):
        return [torch.empty_like(x) for x in xs]

    def setup_context(ctx, inputs, output):
        ctx.inputs = len(inputs[0])
        ctx.wanted = [bool(x.requires_grad) for x in inputs[0]]  # (the gradients a backward computes)
        ctx.save_for_backward(*inputs[0], *output)  # (the outputs: the derived backward reads them)

    def bwd(ctx, grads):
        xs = list(ctx.saved_tensors[: ctx.inputs])
        saved_outs = list(ctx.saved_tensors[ctx.inputs :])
        outs = [g if g is not None else None for g in grads]
        shapes = module.output_shapes(module._sizes(dict(zip(names, xs))))
        full = []
        for g, shape in zip(outs, shapes):
            full.append(
                g
                if g is not None
                else xs[0].new_zeros(shape, dtype=module._float_dtype(dict(zip(names, xs))))
            )
        gx = backward(xs, saved_outs, full, ctx.wanted)
        return ([g if x.is_floating_point() else None for g, x in zip(gx, xs)],)

    forward.register_autograd(bwd, setup_context=setup_context)
    _OPS[key] = forward
    return forward


class TritonKernel(Kernel):
    backend = "triton"

    def __init__(self, program: Program, options: dict):
        source, plan, compiled, name = build(program, **options)
        super().__init__(compiled, options, program)
        self.original = program
        self.source = source
        self.plan = plan
        self.generations = 1
        self.name = name
        self.limits = None
        if "smem_limit" in options or "register_limit" in options:
            self.limits = (
                int(options.get("smem_limit", 1 << 30)),
                int(options.get("register_limit", 1 << 30)),
            )
        # (the op's backward belongs to one kernel: a backward option that is not in the source keys it too)
        keyed = source + f"\n# backward={options.get('backward', 'auto')}"
        self.key = f"{name}_{hashlib.sha256(keyed.encode()).hexdigest()[:12]}"
        self._torch_kernel = None
        self._derived = None  # (DerivedBackward | None, BackwardPlan), built at the first backward pass
        self._derived_for: dict = {}  # the inputs that require a gradient -> derive()'s result
        self._fits: set = set()
        self._modules: dict[bool, object] = {}
        self.module  # noqa: B018 - load it now: a source that does not import is an error at compile time
        # the custom op now, not at the first call: a first call inside torch.compile cannot trace
        # torch.library's registration
        _custom_op(self.key + ("_interpreted" if interpreting() else ""), self)
        if options.get("backward") == "derived" and self.backward_plan.kind != "derived":
            raise EinError(
                f"{program.name}: no generated backward: {self.backward_plan.reason}",
                hint="backward='auto' recomputes the gradient through the torch backend instead",
            )

    def for_empty(self) -> Kernel:
        """An empty rank runs the spec as written on the general path: its reductions know that a sum over
        no point is absent, where the fused kernel's `tl.dot` over padded, all-masked lanes is a present 0
        (a 1-pass cascade with E = 0 averaged V uniformly instead of giving 0)."""
        if self.plan.path == "general" and self.written is None:
            return self
        if getattr(self, "_empty_kernel", None) is None:
            opts = {**self.options, "passes": "as-written", "path": "general"}
            self._empty_kernel = type(self)(self.written or self.original, opts)
        return self._empty_kernel

    @property
    def module(self):
        """The generated module, loaded for the current interpreter mode."""
        mode = interpreting()
        if mode not in self._modules:
            self._modules[mode] = load_module(self.source, self.name)
        return self._modules[mode]

    @property
    def launcher(self):
        """The generated launcher ``def <spec>(<inputs>)``."""
        return getattr(self.module, self.name)

    # ---- calling ----------------------------------------------------------------------------------------
    def run(self, inputs: dict[str, object]) -> tuple:
        import torch

        xs = self._check(inputs, torch)
        op = _custom_op(self.key + ("_interpreted" if interpreting() else ""), self)
        outs = op(xs)
        return tuple(outs)

    def _check(self, inputs: dict, torch) -> list:
        prog = self.program
        from .torch_runtime import FLOATS, _scalar_problem

        for name in prog.inputs:  # what _numbers cannot convert, or converts without a word
            x, kind = inputs[name], prog.tensor(name).dtype
            problem = _scalar_problem(name, x, kind) if not isinstance(x, torch.Tensor) else None
            if isinstance(x, torch.Tensor) and x.layout != torch.strided:
                problem = f"input `{name}` is a {x.layout} tensor: einattn takes dense (strided) ones"
            if problem:
                raise EinError(problem)
        # a Python number for a scalar becomes a tensor of the float tensors' dtype, on their device (as
        # torch's promotion treats Python scalars), as the launcher of a standalone module makes it
        converted = self.module._numbers(*(inputs[n] for n in prog.inputs))
        xs, device, first = [], None, None
        for name, x in zip(prog.inputs, converted):
            given = isinstance(inputs[name], torch.Tensor)
            if not isinstance(x, torch.Tensor):
                raise EinError(
                    f"input `{name}` must be a torch tensor, got {type(x).__name__}",
                    hint="a Python number is accepted for a scalar input only",
                )
            t = prog.tensor(name)
            if t.dtype == "int":
                if x.is_floating_point() or x.is_complex():
                    raise EinError(f"input `{name}` is declared `: int` but was given {x.dtype} values")
            elif x.dtype not in FLOATS:
                if given or not x.dtype.is_floating_point or x.is_complex():  # (as the torch backend: a
                    # Python number is accepted for a float scalar; an integer or float8 tensor is not)
                    raise EinError(
                        f"input `{name}` must be a floating-point tensor (float64, float32, float16 or "
                        f"bfloat16), got {x.dtype}"
                    )
                x = x.to(torch.get_default_dtype())
            if device is None:
                device, first = x.device, name
            elif x.device != device:
                where = f"{device} and {x.device}"
                raise EinError(f"inputs `{first}` and `{name}` are on different devices: {where}")
            xs.append(x)
        if device is not None and device.type != "cuda" and not self.module.INTERPRET:
            raise EinError(
                f"the triton backend runs on CUDA tensors, got {device} tensors",
                hint="set TRITON_INTERPRET=1 before einattn compiles the kernel to run it on the CPU "
                "(slowly), "
                "or use backend='torch'",
            )
        sizes = bind_sizes(prog, {n: tuple(x.shape) for n, x in zip(prog.inputs, xs)})
        if self.plan.path == "fused":
            self._check_resources(sizes, xs, device, torch)
        return xs

    def _check_resources(self, sizes, xs, device, torch) -> None:
        if torch.compiler.is_compiling():
            # Dynamo cannot trace the driver's device query: inside a compiled graph the launch (the custom
            # op, run untraced) checks the launch configurations itself
            return
        m = self.module
        inputs = dict(zip(self.program.inputs, xs))
        dtype = m._float_dtype(inputs)
        shape = m.tile_shape(sizes)
        key = (tuple(sorted(shape.items())), dtype, str(device))
        if key in self._fits:  # checked once per tile shape, dtype and device
            return
        try:
            m.fitting_configs(shape, dtype, device, self.limits)
        except ValueError as e:
            raise EinError(f"{self.program.name}: {e}") from None
        self._fits.add(key)

    # ---- the backward: generated kernels (triton_backward), else recomputed through the torch backend -----
    @property
    def backward_plan(self):
        """How the backward pass runs (:class:`~lowering.triton_backward.BackwardPlan`) for a call that
        differentiates every float input: derived kernels or the torch backend, and why."""
        if self._derived is None:
            from .triton_backward import derive

            self._derived = derive(self)
        return self._derived[1]

    def gradients(self, xs, outs, grads, wanted=None):
        """The gradient of every input given the outputs and their cotangents: the derived kernels, or the
        torch backend (see ``backward_plan``). ``wanted``: which inputs require a gradient (the others get
        zeros, and the derived backward computes only those asked for)."""
        names = self.original.inputs
        asked = tuple(n for n, w in zip(names, wanted or [True] * len(names)) if w)
        if self.backward_plan.kind == "derived" and set(asked) >= set(self._derived[0].gradient.gradients):
            derived = self._derived[0]
        else:  # (backward='torch': derive says so at once)
            if asked not in self._derived_for:
                from .triton_backward import derive

                self._derived_for[asked] = derive(self, asked)
            derived = self._derived_for[asked][0]
        if derived is not None and all(x.numel() for x in xs):
            return derived(xs, outs, grads)
        return self.recompute_grads(xs, grads)

    def torch_kernel(self):
        if self._torch_kernel is None:
            from einattn.api import compile as compile_spec

            try:
                self._torch_kernel = compile_spec(self.original, backend="torch")
            except ImportError as e:  # pragma: no cover - depends on the torch backend being installed
                raise EinError(f"the backward of the triton backend needs the torch backend: {e}") from None
        return self._torch_kernel

    def recompute_grads(self, xs, grads):
        import torch

        tk = self.torch_kernel()
        inc = torch._C._dispatch_tls_local_include_set()
        with torch._C._ForceDispatchKeyGuard(inc, _autograd_on(torch)), torch.enable_grad():
            leaves = [x.detach().requires_grad_(x.is_floating_point()) for x in xs]
            outs = tk(*leaves)
            outs = list(outs) if isinstance(outs, tuple) else [outs]
            pairs = [(o, g) for o, g in zip(outs, grads) if o.requires_grad]
            wrt = [x for x in leaves if x.requires_grad]
            got = iter(
                torch.autograd.grad(
                    [o for o, _ in pairs], wrt, [g.to(o.dtype) for o, g in pairs], allow_unused=True
                )
                if pairs and wrt
                else []
            )
        result = []
        for x in leaves:
            g = next(got, None) if x.requires_grad else None
            result.append(torch.zeros_like(x) if g is None else g.to(x.dtype).contiguous())
        return result

    def compiled_variants(self) -> int:
        """How many Triton binaries this kernel's module holds (0 under the interpreter: it compiles none)."""
        total = 0
        for value in vars(self.module).values():
            caches = getattr(value, "device_caches", None)
            if isinstance(caches, dict):
                for entry in caches.values():
                    cache = entry[0] if isinstance(entry, tuple) else entry
                    total += len(cache) if hasattr(cache, "__len__") else 0
        return total


def compile_program(program: Program, **options) -> TritonKernel:
    try:
        import torch  # noqa: F401
        import triton  # noqa: F401
    except ImportError as e:
        raise EinError(
            f"the triton backend needs torch and triton: {e}", hint="pip install 'einattn[triton]'"
        ) from None
    return TritonKernel(program, options)


__all__ = ["Plan", "TritonKernel", "compile_program", "standalone_source"]


def _autograd_on(torch):
    """The current excluded dispatch keys without autograd's. Inside a custom op's implementation autograd is
    switched off by excluding its keys; recomputing gradients there needs them back, and nothing else changed
    (autocast keys stay excluded: clearing them would silently run matmuls in lower precision)."""
    keys = torch._C._dispatch_tls_local_exclude_set()
    for name in ("AutogradOther", "AutogradNestedTensor", "AutogradFunctionality", "ADInplaceOrView"):
        key = getattr(torch._C.DispatchKey, name, None)
        if key is not None:
            keys = keys - torch._C.DispatchKeySet(key)
    return keys
