"""The engine of the checks: every stage's maps per batch, scored on the device, streamed to disk.

Loop order is batch-outer, stage-inner: for each batch of inputs the trained model's maps are
computed once and kept only while that batch's randomized stages are scored against them, so
memory does not grow with the number of inputs. Stage models are built once and cached while
they fit in ``max_cached_bytes``; beyond that they are rebuilt per batch (same weights: each
block's weights depend only on the seed and its name).

Per stage and batch, one forward pass with gradients gives the logits, the predicted targets and
-- when ``gradient`` or ``gradient_x_input`` is evaluated -- their shared input gradient, so
these cost one forward and one backward pass together. Every other method runs its own passes.

With a :class:`ChunkStore`, each finished batch is written atomically to the run directory, and a
run started again with the same settings skips the batches already done: the final table equals
an uninterrupted run's, bit for bit on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._io import atomic_write, write_json
from ..methods.base import check_output
from ..methods.gradient import Gradient, GradientXInput
from ._result import COLUMNS
from ._reuse import ActivationReuse


@dataclass
class StagePlan:
    """What the runner evaluates: stage information and each stage's model.

    ``build(pos)`` returns the model of the stage at position ``pos`` (0 = the reference);
    ``build_null(pos)``, if given, a second, independently randomized model for that stage (the
    null reference). Each is built once, on first use. An ``info`` entry whose
    ``output_change`` is None is filled in by the runner from the logits of the first batch,
    so measuring it costs no extra forward pass.
    """

    info: list[dict[str, Any]]
    build: Callable[[int], nn.Module]
    build_null: Callable[[int], nn.Module] | None = None
    #: bytes of the trained model's activations kept per batch for reuse by the stage models
    #: (0: none). Only valid where stages share their unchanged lower modules with the trained
    #: model (top-down cascading built with :func:`shared_copy`); see ``checks._reuse``.
    reuse_bytes: int = 0
    _cache: dict[Any, nn.Module] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.info)

    def model(self, pos: int) -> nn.Module:
        if pos not in self._cache:
            self._cache[pos] = self.build(pos)
        return self._cache[pos]

    def null_model(self, pos: int) -> nn.Module | None:
        """The null twin of the stage at position ``pos`` (None for the reference)."""
        if self.build_null is None or pos == 0:
            return None
        key = ("null", pos)
        if key not in self._cache:
            self._cache[key] = self.build_null(pos)
        return self._cache[key]


def shared_copy(base: nn.Module, fresh: set[str]) -> nn.Module:
    """A copy of ``base`` that shares everything with it except the tensors named in ``fresh``,
    which are cloned (ready to be randomized in place).

    Stages of a randomization differ only in their randomized blocks, so sharing the rest costs
    no memory and almost no time: copy-on-write on the module tree. Only the modules on the
    path from the root to a fresh tensor are new objects (copied shallowly, with their own
    parameter, buffer, submodule and hook containers); every other submodule is ``base``'s own
    object. A module registered twice is handled once. Nothing may modify a shared module or
    tensor: the runner never does (methods remove the hooks they add).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
        >>> twin = shared_copy(net, {"1.weight"})
        >>> twin is net, twin[0] is net[0], twin[1] is net[1], twin[1].bias is net[1].bias
        (False, True, False, True)
        >>> torch.equal(twin[1].weight, net[1].weight), twin[1].weight is net[1].weight
        (True, False)
    """
    if isinstance(base, torch.jit.ScriptModule):  # no structural copy for TorchScript
        memo: dict[int, Any] = {}
        for name, t in [*base.named_parameters(), *base.named_buffers()]:
            if name not in fresh:
                memo[id(t)] = t
        return copy.deepcopy(base, memo)
    modules: dict[int, nn.Module] = {}
    tensors: dict[int, torch.Tensor] = {}

    def tensor(t: torch.Tensor | None, name: str) -> torch.Tensor | None:
        if t is None or name not in fresh:
            return t
        if id(t) not in tensors:  # tied tensors stay tied
            if isinstance(t, nn.Parameter):
                tensors[id(t)] = nn.Parameter(t.detach().clone(), requires_grad=t.requires_grad)
            else:
                tensors[id(t)] = t.detach().clone()
        return tensors[id(t)]

    owners = {name.rpartition(".")[0] for name in fresh}
    on_path = {""} | {".".join(o.split(".")[:i]) for o in owners if o
                      for i in range(1, o.count(".") + 2)}

    def clone(mod: nn.Module, prefix: str) -> nn.Module:
        if id(mod) in modules:
            return modules[id(mod)]
        if prefix.rstrip(".") not in on_path:
            modules[id(mod)] = mod  # nothing fresh below: share the module itself
            return mod
        new = object.__new__(type(mod))  # a shallow copy, without copyreg's slow path
        new.__dict__.update({k: copy.copy(v) if isinstance(v, (dict, set)) else v
                             for k, v in vars(mod).items()})
        modules[id(mod)] = new
        new._parameters = {k: tensor(p, prefix + k) for k, p in mod._parameters.items()}
        new._buffers = {k: tensor(b, prefix + k) for k, b in mod._buffers.items()}
        new._modules = {k: None if c is None else clone(c, f"{prefix}{k}.")
                        for k, c in mod._modules.items()}
        return new

    return clone(base, "")


# ----------------------------------------------------------------------------------- storage
class ChunkStore:
    """Per-batch results of one run, saved atomically under ``<run_dir>/partial/``.

    The run's fingerprint (a hash of the model's weights, the inputs and every setting) is
    written first; a directory holding another run's fingerprint is refused, never mixed.
    """

    def __init__(self, run_dir: str | Path, fingerprint: str, describe: Mapping[str, Any]):
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / "partial"
        self.fingerprint = fingerprint
        self._describe = dict(describe)

    def open(self) -> None:
        """Create the directory or check that it holds this same run."""
        fp_file = self.dir / "fingerprint.json"
        done = self.run_dir / "run.json"
        for f in (fp_file, done):
            if f.is_file():
                other = _read_fingerprint(f)
                if other != self.fingerprint:
                    raise ValueError(
                        f"{self.run_dir} holds a run with other settings, model weights or "
                        "inputs; it is left untouched. Choose another output directory, or "
                        "delete that one to start afresh"
                    )
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OSError(f"cannot create the run directory {self.run_dir}: {err.strerror}; "
                          "choose a writable output directory") from err
        if not fp_file.is_file():
            write_json(fp_file, {"fingerprint": self.fingerprint, "run": self._describe})

    def done(self) -> set[int]:
        return {int(p.stem.split("_")[1]) for p in self.dir.glob("batch_*.npz")}

    def save(self, b: int, chunk: dict[str, np.ndarray]) -> None:
        def write(p: Path) -> None:
            with open(p, "wb") as fh:
                np.savez(fh, **chunk)

        atomic_write(self.dir / f"batch_{b:06d}.npz", write)

    def load(self, b: int) -> dict[str, np.ndarray]:
        with np.load(self.dir / f"batch_{b:06d}.npz", allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _read_fingerprint(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if "fingerprint" in data:
        return data["fingerprint"]
    return (data.get("settings") or {}).get("fingerprint")


def fingerprint(models: Sequence[nn.Module], tensors: Sequence[torch.Tensor | None],
                settings: Mapping[str, Any]) -> str:
    """A hash of model weights, input tensors and JSON-able settings."""
    h = hashlib.sha256()
    for m in models:
        for name, t in m.state_dict().items():
            h.update(name.encode())
            h.update(str(t.dtype).encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    for t in tensors:
        if t is None:
            h.update(b"none")
        else:
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


# ------------------------------------------------------------------------------------ engine
@dataclass
class RunOutput:
    table: pd.DataFrame
    null: pd.DataFrame | None
    examples: dict[str, Any]
    stages: list[dict[str, Any]]
    reused: int = 0  # weighted operations whose output was reused (see ``checks._reuse``)


def _is_builtin(method: Any) -> bool:
    mod = type(method).__module__
    return mod.startswith("saliency_sanity.methods") and not mod.endswith("adapters")


def _fusable(method: Any) -> str | None:
    if type(method) is Gradient:
        return "gradient"
    if type(method) is GradientXInput:
        return "gradient_x_input"
    return None


class _Evaluator:
    def __init__(self, plan: StagePlan, x: torch.Tensor, target: torch.Tensor | None,
                 target_mode: str, method_objs: Mapping[str, Any], score_objs: Mapping[str, Any],
                 seed: int, n_examples: int):
        self.plan, self.x, self.target, self.target_mode = plan, x, target, target_mode
        self.methods, self.scores = dict(method_objs), dict(score_objs)
        self.seed, self.n_examples = seed, n_examples
        self.fused = {label: _fusable(m) for label, m in self.methods.items()}
        self.need_grad = any(v is not None for v in self.fused.values())
        self.reuse = ActivationReuse(plan.reuse_bytes) if plan.reuse_bytes > 0 else None

    def _reusing(self, record: bool) -> Any:
        """The activation-reuse mode (recording for the trained model), or a no-op context."""
        if self.reuse is None:
            return contextlib.nullcontext()
        return self.reuse.record() if record else self.reuse.replay()

    # one model, one batch: all methods' maps (and the logits, for the output change)
    def maps(self, model: nn.Module, xb: torch.Tensor, tb: torch.Tensor | None, stage_key: Any,
             b: int, record: bool = False
             ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        from ..methods.base import check_logits, check_target_range
        from ._engine import method_for_call

        if self.reuse is not None:
            self.reuse.rewind()
        xg = xb.detach().clone().requires_grad_(self.need_grad)
        with torch.set_grad_enabled(self.need_grad), self._reusing(record):
            logits = check_logits(model(xg), xb.shape[0], "model")
        if tb is None:
            tb = logits.detach().argmax(dim=1)
        check_target_range(tb, logits.shape[1], "target")
        grad = None
        if self.need_grad:
            score = logits.gather(1, tb.view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(score, xg)
            grad = grad.detach()
        logits = logits.detach()
        del xg
        out: dict[str, torch.Tensor] = {}
        for label, method in self.methods.items():
            kind = self.fused[label]
            if kind == "gradient":
                maps = grad
            elif kind == "gradient_x_input":
                maps = grad * xb
            else:
                m = method_for_call(method, label, self.seed, stage_key, b)
                if _is_builtin(m):  # plug-ins run without reuse: they may differentiate twice
                    with self._reusing(record):
                        maps = m.attribute(model, xb, tb)
                else:
                    maps = m(model, xb, tb)
            out[label] = check_output(maps, xb, who=label)
        return out, tb, logits

    def batch(self, b: int, span: slice, on_step: Callable[[], None]) -> dict[str, np.ndarray]:
        xb = self.x[span]
        samples = np.arange(span.start, span.stop)
        rows: dict[str, list[np.ndarray]] = {c: [] for c in COLUMNS}
        null_rows: dict[str, list[np.ndarray]] = {c: [] for c in COLUMNS}
        keep = max(0, min(self.n_examples - span.start, len(samples)))
        from ..randomization import output_change
        kept: dict[str, np.ndarray] = {}
        ref: dict[str, torch.Tensor] = {}
        fixed: torch.Tensor | None = None
        if self.target_mode == "fixed" and self.target is not None:
            fixed = self.target[span].to(xb.device)
        ref_logits: torch.Tensor | None = None
        for pos, info in enumerate(self.plan.info):
            k = info["index"]  # the stage's own number (positions may skip stages)
            tb_in = fixed if self.target_mode == "fixed" else None
            maps, tb, logits = self.maps(self.plan.model(pos), xb, tb_in, k, b, record=pos == 0)
            if b == 0:
                if pos == 0:
                    ref_logits = logits
                change = output_change(ref_logits, logits)
                change["unchanged"] = float(pos > 0 and torch.equal(logits, ref_logits))
                for key, val in change.items():
                    kept[f"oc|{pos}|{key}"] = np.array(val, dtype=np.float64)
            if pos == 0:
                ref = maps
                if self.target_mode == "fixed":
                    fixed = tb
            else:
                for label, m in maps.items():
                    for sname, score in self.scores.items():
                        _append(rows, label, k, info["block"], samples, sname,
                                _score(score, ref[label], m))
                twin = self.plan.null_model(pos)
                if twin is not None:
                    tmaps, _, _ = self.maps(twin, xb, tb_in, f"null-{k}", b)
                    for label, m in maps.items():
                        for sname, score in self.scores.items():
                            _append(null_rows, label, k, info["block"], samples, sname,
                                    _score(score, m, tmaps[label]))
            if keep:
                kept[f"targets|{k}"] = tb[:keep].cpu().numpy()
                for label, m in maps.items():
                    kept[f"maps|{label}|{k}"] = m[:keep].cpu().numpy()
            on_step()
        if self.reuse is not None:
            self.reuse.clear()
        chunk = {f"t_{c}": _cat(v, c) for c, v in rows.items()}
        chunk.update({f"n_{c}": _cat(v, c) for c, v in null_rows.items()})
        chunk.update(kept)
        return chunk


def _cat(parts: list[np.ndarray], col: str) -> np.ndarray:
    if parts:
        return np.concatenate(parts)
    return np.array([], dtype=np.float64 if col == "value" else
                    (np.int64 if col in ("stage", "sample") else "<U1"))


def _score(score: Any, a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    import warnings

    with warnings.catch_warnings():
        # per-batch NaN warnings are replaced by one summary warning for the whole run
        warnings.filterwarnings("ignore", message=".*(constant|NaN|nan).*")
        return score(a, b).detach().double().cpu().numpy()


def _append(cols: dict[str, list[np.ndarray]], method: str, stage: int, layer: Any,
            samples: np.ndarray, metric: str, vals: np.ndarray) -> None:
    n = len(samples)
    cols["method"].append(np.full(n, method))
    cols["stage"].append(np.full(n, stage, dtype=np.int64))
    cols["layer"].append(np.full(n, "" if layer is None else str(layer)))
    cols["sample"].append(samples.astype(np.int64))
    cols["metric"].append(np.full(n, metric))
    cols["value"].append(vals.astype(np.float64))


_DTYPES = {"method": object, "stage": np.int64, "layer": object, "sample": np.int64,
           "metric": object, "value": np.float64}


def _frame(chunks: list[dict[str, np.ndarray]], prefix: str) -> pd.DataFrame:
    """The tidy table from the chunks' columns (strings as Python str objects)."""
    data = {}
    for c in COLUMNS:
        parts = [ch[f"{prefix}{c}"] for ch in chunks]
        col = np.concatenate(parts) if parts else np.array([])
        data[c] = col.astype(_DTYPES[c], copy=False)
    return pd.DataFrame(data, columns=COLUMNS, copy=False)


def evaluate(plan: StagePlan, x: torch.Tensor, target: torch.Tensor | None, target_mode: str,
             method_objs: Mapping[str, Any], score_objs: Mapping[str, Any],
             spans: Sequence[slice], seed: int, n_examples: int,
             on_step: Callable[[], None] = lambda: None,
             store: ChunkStore | None = None) -> RunOutput:
    """Run every batch through every stage (skipping batches ``store`` already holds)."""
    ev = _Evaluator(plan, x, target, target_mode, method_objs, score_objs, seed, n_examples)
    done = store.done() if store is not None else set()
    chunks = []
    with torch.inference_mode(False), torch.enable_grad():
        for b, span in enumerate(spans):
            if b in done:
                chunk = store.load(b)  # type: ignore[union-attr]
                for _ in plan.info:
                    on_step()
            else:
                chunk = ev.batch(b, span, on_step)
                if store is not None:
                    store.save(b, chunk)
            chunks.append(chunk)
    _fill_output_change(plan.info, chunks[0] if chunks else {})
    table = _frame(chunks, "t_")
    null = _frame(chunks, "n_") if plan.build_null is not None else None
    examples = _examples(chunks, x, n_examples, list(method_objs),
                         [info["index"] for info in plan.info])
    from ._engine import _warn_nan

    _warn_nan(table)
    return RunOutput(table=table, null=null, examples=examples, stages=list(plan.info),
                     reused=ev.reuse.hits if ev.reuse is not None else 0)


def _fill_output_change(info: list[dict[str, Any]], chunk0: dict[str, np.ndarray]) -> None:
    """Stage output changes measured on the first batch (kept in its chunk, so a resumed run
    reports them too); warn once about stages whose outputs did not change at all."""
    import warnings

    for pos, stage in enumerate(info):
        if stage.get("output_change") is not None:
            continue
        prefix = f"oc|{pos}|"
        change = {k[len(prefix):]: float(v) for k, v in chunk0.items() if k.startswith(prefix)}
        stage["unchanged"] = bool(change.pop("unchanged", 0.0))
        stage["output_change"] = change
    dead = [s["index"] for s in info if s.get("unchanged")]
    if dead:
        warnings.warn(
            f"stage(s) {dead}: randomizing left the model's outputs on the first batch "
            "bit-identical to the trained model's (blocks not used by the forward pass?)",
            RuntimeWarning,
            stacklevel=3,
        )


def _examples(chunks: list[dict[str, np.ndarray]], x: torch.Tensor, n: int,
              labels: list[str], stages: list[int]) -> dict[str, Any]:
    ex: dict[str, Any] = {"inputs": x[:n].detach().cpu().numpy(), "samples": np.arange(n),
                          "targets": {}, "maps": {label: {} for label in labels}}
    if n == 0:
        return ex
    for k in stages:
        parts = [ch[f"targets|{k}"] for ch in chunks if f"targets|{k}" in ch]
        ex["targets"][k] = np.concatenate(parts)[:n]
        for label in labels:
            key = f"maps|{label}|{k}"
            ex["maps"][label][k] = np.concatenate([ch[key] for ch in chunks if key in ch])[:n]
    return ex


# One deep-copy helper for the whole package (defined beside the randomization stages).
from ..randomization._stages import fresh_copy  # noqa: E402,F401,I001
