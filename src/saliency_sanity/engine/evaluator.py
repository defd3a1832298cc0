"""The one evaluation path of every check: units of work in, rows (or probe arrays) out.

A check describes its work as plain data: a plan of models (``randomization.StagePlan`` or
``FixedPlan``), the units (batches of inputs with stable keys), the :class:`View` s to compute
in every unit (a model of the plan explaining a target) and the :class:`Pair` s of views to
score. The evaluator computes each view's maps through the methods' own call path (input
checks, model guard and hook removal included), scores each pair as soon as both of its views
are there, and returns one chunk of column arrays per unit; a :class:`~.store.UnitStore`
writes each finished unit once, so an interrupted run resumes. A check that measures something
other than maps (activation statistics) passes a ``probe`` instead of pairs; one that scores
each map on its own (a faithfulness curve) passes ``curves``.

Loop order is unit-outer, view-inner: the reference maps of a batch are kept only while that
batch's views are scored, so memory does not grow with the number of inputs. Per view, one
forward pass with gradients gives the logits, the targets and -- for methods whose map is a
function of the input gradient (``Method.input_gradient_map``) -- their shared input gradient.
Stage models are built by the plan when first needed and released once the last unit is done
with them. With ``reuse_bytes > 0`` the trained model's activations are reused below the
randomized blocks (``engine.reuse``), for methods that declare it safe (``Method.reuse_safe``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..methods.base import check_logits, check_target_range
from ..randomization import output_change
from ..results import COLUMNS
from .resolve import method_for_call
from .reuse import ActivationReuse
from .rows import (
    _cat,
    _examples,
    append_rows,
    fill_output_change,
    frame,
    score_quietly,
    warn_nan,
)
from .store import UnitStore


@dataclass(frozen=True)
class Unit:
    """One independent piece of work: a batch of inputs, with a stable key.

    Example:
        >>> batch_units(5, 2)[-1]
        Unit(key='batch-000002', index=2, start=4, stop=5)
    """

    key: str
    index: int
    start: int
    stop: int

    @property
    def span(self) -> slice:
        return slice(self.start, self.stop)


def batch_units(n: int, batch_size: int) -> list[Unit]:
    """Units covering ``n`` inputs in batches of ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [Unit(f"batch-{i // batch_size:06d}", i // batch_size, i, min(i + batch_size, n))
            for i in range(0, n, batch_size)]


@dataclass(frozen=True)
class View:
    """A set of maps computed in every unit: the plan's model at ``pos`` (its null twin with
    ``twin``) explaining ``target`` (None: the check's target mode; else the name of a target
    array given to the evaluator). ``seed_key`` reseeds seeded methods and controls
    (:func:`~.resolve.method_for_call`); ``keep_as`` keeps the first maps as examples under that
    stage number; ``measure`` records the output change against the first view."""

    key: str
    pos: int
    seed_key: Any
    twin: bool = False
    target: str | None = None
    keep_as: int | None = None
    measure: bool = False


@dataclass(frozen=True)
class Pair:
    """Score the maps of view ``a`` against view ``b``: rows labelled ``stage`` and ``layer``,
    into the main table (``"t"``) or the null reference (``"n"``)."""

    a: str
    b: str
    stage: int
    layer: str
    table: str = "t"


@dataclass
class RunOutput:
    table: pd.DataFrame
    null: pd.DataFrame | None
    examples: dict[str, Any]
    stages: list[dict[str, Any]]
    chunks: list[dict[str, np.ndarray]] = field(default_factory=list)
    reused: int = 0  # weighted operations whose output was reused (see ``engine.reuse``)
    peak_held: int = 0  # the most stage models the plan held at once


#: ``probe(model, xb, unit)``: arrays measured on one batch (run without gradients; a probe that
#: needs them enables them itself)
Probe = Callable[[nn.Module, torch.Tensor, "Unit"], Mapping[str, np.ndarray]]
#: ``curves(model, xb, targets, maps, unit)`` yields ``(method, metric, x_labels, values)``: a
#: curve per sample, values (B, K), one row per sample and point k (``stage = k``, ``layer =
#: x_labels[k]``), e.g. the model's score as a map's most relevant pixels are removed
Curves = Callable[[nn.Module, torch.Tensor, torch.Tensor, Mapping[str, torch.Tensor], Unit],
                  Iterable[tuple[str, str, Sequence[str], np.ndarray]]]


class Evaluator:
    """Computes the views of one unit and scores its pairs (see the module docstring)."""

    def __init__(self, plan: Any, views: Sequence[View], pairs: Sequence[Pair], x: torch.Tensor,
                 target: torch.Tensor | None, target_mode: str,
                 method_objs: Mapping[str, Any], score_objs: Mapping[str, Any], seed: int,
                 n_examples: int, targets: Mapping[str, torch.Tensor] | None = None,
                 reuse_bytes: int = 0, probe: Probe | None = None,
                 curves: Curves | None = None, dtype: torch.dtype | None = None) -> None:
        # the constructor's arguments: a backend rebuilds this evaluator from them elsewhere
        self.spec = dict(plan=plan, views=views, pairs=pairs, x=x, target=target,
                         target_mode=target_mode, method_objs=method_objs,
                         score_objs=score_objs, seed=seed, n_examples=n_examples,
                         targets=targets, reuse_bytes=reuse_bytes, probe=probe, curves=curves,
                         dtype=dtype)
        self.dtype = dtype
        self.plan, self.views, self.pairs = plan, list(views), list(pairs)
        self.curves = curves
        self.x, self.target, self.target_mode = x, target, target_mode
        self.methods, self.scores = dict(method_objs), dict(score_objs)
        self.seed, self.n_examples = seed, n_examples
        self.targets = dict(targets or {})
        self.probe = probe
        self.need_grad = any(m.input_gradient_map for m in self.methods.values())
        self.reuse = ActivationReuse(reuse_bytes) if reuse_bytes > 0 else None
        keys = [v.key for v in self.views]
        if len(set(keys)) != len(keys):
            raise ValueError(f"view keys must be unique: {keys}")

    def _reusing(self, record: bool) -> Any:
        """The activation-reuse mode (recording for the trained model), or a no-op context."""
        if self.reuse is None:
            return contextlib.nullcontext()
        return self.reuse.record() if record else self.reuse.replay()

    def maps(self, model: nn.Module, xb: torch.Tensor, tb: torch.Tensor | None, seed_key: Any,
             b: int, record: bool = False
             ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """All methods' maps of one model on one batch, the targets and the logits (under
        ``torch.autocast`` with a mixed-precision ``dtype``; maps and logits back in float32)."""
        if self.dtype is None:
            return self._maps(model, xb, tb, seed_key, b, record)
        with torch.autocast(xb.device.type, dtype=self.dtype):
            out, tb, logits = self._maps(model, xb, tb, seed_key, b, record)
        return {k: v.float() for k, v in out.items()}, tb, logits.float()

    def _maps(self, model: nn.Module, xb: torch.Tensor, tb: torch.Tensor | None, seed_key: Any,
              b: int, record: bool = False
              ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
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
            if method.input_gradient_map:
                out[label] = method.from_input_gradient(grad, xb)
                continue
            m = method_for_call(method, label, self.seed, seed_key, b)
            reuse = self._reusing(record) if m.reuse_safe else contextlib.nullcontext()
            with reuse:
                out[label] = m(model, xb, tb, checked_target=True)
        return out, tb, logits

    def unit(self, unit: Unit, last: bool, on_step: Callable[[], None]
             ) -> dict[str, np.ndarray]:
        """The chunk of one unit: table columns (``t_*``, ``n_*``), kept examples (``maps|*``,
        ``targets|*``), output changes (``oc|*``, first unit only) and probe arrays."""
        span, b = unit.span, unit.index
        xb = self.x[span]
        samples = np.arange(unit.start, unit.stop)
        rows: dict[str, dict[str, list[np.ndarray]]] = {
            t: {c: [] for c in COLUMNS} for t in ("t", "n")}
        keep = max(0, min(self.n_examples - unit.start, len(samples)))
        chunk: dict[str, np.ndarray] = {}
        maps: dict[str, dict[str, torch.Tensor]] = {}
        pending = list(self.pairs)
        fixed: torch.Tensor | None = None
        if self.target_mode == "fixed" and self.target is not None:
            fixed = self.target[span].to(xb.device)
        ref_logits: torch.Tensor | None = None
        last_pos = 0
        for i, view in enumerate(self.views):
            if last and view.pos > last_pos:
                self.plan.release_before(last_pos)  # stages below are done with for good
            last_pos = max(last_pos, view.pos)
            model = self.plan.model(view.pos, view.twin)
            if view.target is not None:
                tb_in = self.targets[view.target][span].to(xb.device)
            else:
                tb_in = fixed if self.target_mode == "fixed" else None
            if self.probe is not None:
                with torch.no_grad():
                    for name, arr in self.probe(model, xb, unit).items():
                        chunk[f"probe|{view.key}|{name}"] = arr
                on_step()
                continue
            vmaps, tb, logits = self.maps(model, xb, tb_in, view.seed_key, b,
                                          record=i == 0 and self.reuse is not None)
            if i == 0:
                ref_logits = logits
                if self.target_mode == "fixed" and view.target is None and fixed is None:
                    fixed = tb
            if view.measure and b == 0 and ref_logits is not None:
                change = output_change(ref_logits, logits)
                change["unchanged"] = float(i > 0 and torch.equal(logits, ref_logits))
                for key, val in change.items():
                    chunk[f"oc|{view.pos}|{key}"] = np.array(val, dtype=np.float64)
            if keep and view.keep_as is not None:
                chunk[f"targets|{view.keep_as}"] = tb[:keep].cpu().numpy()
                for label, m in vmaps.items():
                    chunk[f"maps|{label}|{view.keep_as}"] = m[:keep].cpu().numpy()
            if self.curves is not None:
                for label, metric, xs, vals in self.curves(model, xb, tb, vmaps, unit):
                    for k, xk in enumerate(xs):
                        append_rows(rows["t"], label, k, xk, samples, metric, vals[:, k])
            maps[view.key] = vmaps
            still: list[Pair] = []
            for pair in pending:
                if pair.a in maps and pair.b in maps:
                    self._score(rows[pair.table], pair, maps[pair.a], maps[pair.b], samples)
                else:
                    still.append(pair)
            pending = still
            needed = {k for p in pending for k in (p.a, p.b)}
            for k in [k for k in maps if k not in needed]:
                del maps[k]
            on_step()
        if self.reuse is not None:
            self.reuse.clear()
        for t, cols in rows.items():
            chunk.update({f"{t}_{c}": _cat(v, c) for c, v in cols.items()})
        return chunk

    def _score(self, cols: dict[str, list[np.ndarray]], pair: Pair, a: Mapping[str, Any],
               b: Mapping[str, Any], samples: np.ndarray) -> None:
        for label in self.methods:
            for sname, score in self.scores.items():
                append_rows(cols, label, pair.stage, pair.layer, samples, sname,
                            score_quietly(score, a[label], b[label]))


def evaluate(plan: Any, views: Sequence[View], pairs: Sequence[Pair], x: torch.Tensor,
             target: torch.Tensor | None, target_mode: str, method_objs: Mapping[str, Any],
             score_objs: Mapping[str, Any], units: Sequence[Unit], seed: int, n_examples: int,
             on_step: Callable[[], None] = lambda: None, store: UnitStore | None = None,
             targets: Mapping[str, torch.Tensor] | None = None, reuse_bytes: int = 0,
             probe: Probe | None = None, curves: Curves | None = None,
             runner: Any = None, dtype: torch.dtype | None = None) -> RunOutput:
    """Run every unit (skipping those ``store`` already holds) and assemble the tables, the
    example maps and the stages' output changes. ``runner`` (default :class:`LocalRunner`)
    computes the units; this process alone writes each finished unit to ``store``, once."""
    ev = Evaluator(plan, views, pairs, x, target, target_mode, method_objs, score_objs, seed,
                   n_examples, targets, reuse_bytes, probe, curves, dtype)
    runner = runner if runner is not None else LocalRunner()
    done = store.done() if store is not None else set()
    chunks: dict[str, dict[str, np.ndarray]] = {}
    todo = []
    for unit in units:
        chunk = store.load(unit.key) if unit.key in done else None  # type: ignore[union-attr]
        if chunk is None:
            todo.append(unit)
            continue
        chunks[unit.key] = chunk
        for _ in views:
            on_step()
    last = units[-1].index if units else -1
    for unit, chunk in runner.run(ev, todo, last, on_step):
        if unit.key in chunks:
            raise RuntimeError(f"unit {unit.key} was returned twice")
        if store is not None:
            store.save(unit.key, chunk)
        chunks[unit.key] = chunk
    reused, peak_held = runner.stats(ev)
    plan.release()
    ordered = [chunks[u.key] for u in units]
    stages = [s.record() for s in plan.specs]
    fill_output_change(stages, ordered[0] if ordered else {})
    table = frame(ordered, "t_")
    null = frame(ordered, "n_") if any(p.table == "n" for p in pairs) else None
    kept = [v.keep_as for v in views if v.keep_as is not None]
    examples = _examples(ordered, x, n_examples, list(method_objs), kept) if kept else {}
    warn_nan(table)
    return RunOutput(table=table, null=null, examples=examples, stages=stages, chunks=ordered,
                     reused=reused, peak_held=peak_held)


class LocalRunner:
    """Computes units one after the other in this process (the default backend); the
    evaluator keeps its stage models and activation reuse from one unit to the next."""

    def run(self, ev: Evaluator, units: Sequence[Unit], last: int,
            on_step: Callable[[], None]) -> Iterator[tuple[Unit, dict[str, np.ndarray]]]:
        with torch.inference_mode(False), torch.enable_grad():
            for unit in units:
                yield unit, ev.unit(unit, unit.index == last, on_step)

    def stats(self, ev: Evaluator) -> tuple[int, int]:
        """Operations reused (``engine.reuse``) and the most stage models held at once."""
        return (ev.reuse.hits if ev.reuse is not None else 0), ev.plan.peak_held
