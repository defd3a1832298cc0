"""The settings every check shares, in one place: :class:`RunConfig`.

Every check takes these as keyword arguments (``seed=1, batch_size=8, progress=False``) or as one
``config=RunConfig(...)``; they are validated once, here, and recorded the same way in every
``run.json`` (:meth:`RunConfig.record`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts (the same in every process and platform).

    Example:
        >>> derive_seed(0, "gradient", 3) == derive_seed(0, "gradient", 3)
        True
    """
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


#: where units of work run: this process, or Ray tasks (``engine.ray_backend``)
BACKENDS = ("local", "ray")
#: ``RunConfig.dtype``: None / "float32" = exact (no autocast); else mixed precision
DTYPES = (None, "float32", "bfloat16", "float16")


def check_backend(backend: str, ray_address: str | None = None,
                  ray_options: Mapping[str, Any] | None = None) -> None:
    """A clear error for an unknown backend, or Ray settings without the Ray backend.

    Example:
        >>> check_backend("ray", "auto")
        >>> try:
        ...     check_backend("local", "auto")
        ... except ValueError as err:
        ...     print(str(err)[:44])
        ray_address and ray_options apply to the Ray
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "ray" and (ray_address is not None or ray_options):
        raise ValueError("ray_address and ray_options apply to the Ray backend only: "
                         "add backend='ray' (--backend ray)")


@dataclass(frozen=True)
class RunConfig:
    """The common settings of a check.

    Attributes:
        seed: seeds randomization, noise-based methods and random controls; the global RNG is
            never used.
        batch_size: inputs per forward/backward batch (one unit of work per batch).
        device: where to run; default the model's device.
        target_mode: ``"predicted"`` explains the class each model predicts (the paper);
            ``"fixed"`` explains ``target`` or, without it, the trained model's prediction.
            Default: "fixed" if a target is given, else "predicted".
        controls: add the default controls (True), none (False), or a list of names.
        n_examples: how many of the first inputs keep their maps in the result, for figures.
        progress: show a progress bar.
        run_dir: stream each finished unit of work there; a run started again with the same
            arguments continues where it stopped, and a finished one is loaded, not recomputed.
        backend: ``"local"`` (default: this process, with activation reuse) or ``"ray"``: each
            unit of work runs as a Ray task (the ``ray`` extra; ``docs/scaling.md``). Results,
            files and the fingerprint are the same on both, so a run started on one resumes on
            the other.
        ray_address: the Ray cluster to use (``"auto"``, ``"ray://host:10001"``, ...); None
            starts a local one, or uses the one already initialized in this process.
        ray_options: Ray task options for every unit (``{"num_cpus": 2, "num_gpus": 0.5}``);
            default one GPU per task on CUDA, and as many CPUs as this process's torch threads.
        dtype: None (default: the model's own precision, exact) or ``"bfloat16"`` /
            ``"float16"``: the forward and backward passes of the maps run under
            ``torch.autocast`` (mixed precision); faster on GPUs, but maps and scores change
            (``docs/scaling.md`` measures by how much). Recorded, and part of the fingerprint.

    Example:
        >>> cfg = RunConfig.from_kwargs(None, {"seed": 3, "progress": False})
        >>> cfg.seed, cfg.batch_size
        (3, 32)
        >>> RunConfig.from_kwargs(None, {"sed": 3})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: unknown setting 'sed'; the common settings are: backend, batch_size, ...
    """

    seed: int = 0
    batch_size: int = 32
    device: str | torch.device | None = None
    target_mode: str | None = None
    controls: bool | Sequence[str] = True
    n_examples: int = 4
    progress: bool = True
    run_dir: str | os.PathLike | None = None
    backend: str = "local"
    ray_address: str | None = None
    ray_options: Mapping[str, Any] | None = None
    dtype: str | None = None

    def __post_init__(self) -> None:
        for name in ("seed", "batch_size", "n_examples"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"{name} must be an integer, got {v!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        check_backend(self.backend, self.ray_address, self.ray_options)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.dtype == "float32":  # the default precision: no autocast, nothing recorded
            object.__setattr__(self, "dtype", None)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The ``torch.autocast`` dtype of the maps (None: no mixed precision)."""
        return None if self.dtype is None else getattr(torch, self.dtype)

    @classmethod
    def from_kwargs(cls, config: RunConfig | None, kwargs: Mapping[str, Any],
                    defaults: Mapping[str, Any] | None = None) -> RunConfig:
        """``config`` (or the defaults) with ``kwargs`` replacing fields; unknown keys raise.

        ``defaults``: a check's own defaults for some common settings (DiffROAR's larger
        batches), used only when no ``config`` is given; a keyword always wins.

        Example:
            >>> RunConfig.from_kwargs(RunConfig(seed=5, batch_size=8), {"seed": 1}).seed
            1
            >>> RunConfig.from_kwargs(None, {}, defaults={"batch_size": 250}).batch_size
            250
        """
        names = sorted(f.name for f in dataclasses.fields(cls))
        for k in [*kwargs, *(defaults or {})]:
            if k not in names:
                raise TypeError(f"unknown setting {k!r}; the common settings are: "
                                f"{', '.join(names)}")
        base = config if config is not None else cls(**dict(defaults or {}))
        if not isinstance(base, RunConfig):
            raise TypeError(f"config must be a RunConfig, got {type(base).__name__}")
        return dataclasses.replace(base, **dict(kwargs))

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> RunConfig:
        """The config a saved run used, rebuilt from its ``run.json`` (the whole file's dict
        or its ``"settings"``): seed, batch size, device, target mode, controls, examples,
        backend and dtype as :meth:`record` wrote them (the resolved values: the device the run
        used, the target mode it chose). ``progress``, ``run_dir`` and the Ray address and
        options are not recorded: they get their defaults. Running the same check on the same
        inputs with the rebuilt config records the same settings.

        Example:
            >>> cfg = RunConfig(seed=5, batch_size=8, device="cpu", target_mode="fixed",
            ...                 controls=False, n_examples=2)
            >>> rec = {"check": "demo", "settings": {"seed": 5, "batch_size": 8,
            ...        "device": "cpu", "target_mode": "fixed", "n_examples": 2, "controls": []}}
            >>> RunConfig.from_record(rec) == cfg
            True
            >>> RunConfig.from_record({"seed": 1, "engine": {"backend": "ray"}}).backend
            'ray'
        """
        if not isinstance(record, Mapping):
            raise TypeError(f"record must be the dict of a run.json, got {type(record).__name__}")
        st = record.get("settings", record)
        if not isinstance(st, Mapping):
            raise TypeError("record['settings'] must be a dict (the settings of a run.json)")
        kw: dict[str, Any] = {}
        for name in ("seed", "batch_size", "n_examples"):
            if st.get(name) is not None:
                kw[name] = int(st[name])
        for name in ("device", "target_mode", "dtype"):
            if st.get(name) is not None:
                kw[name] = str(st[name])
        controls = st.get("controls")
        if isinstance(controls, (list, tuple)):  # the labels of the controls that ran
            kw["controls"] = list(controls) if controls else False
        engine = st.get("engine")
        if isinstance(engine, Mapping) and engine.get("backend") is not None:
            kw["backend"] = str(engine["backend"])
        return cls(**kw)

    def reject_unused(self, used: Sequence[str], check: str) -> None:
        """A clear error when a common setting the check does not use is set (not the default).

        Example:
            >>> RunConfig(seed=1).reject_unused(["seed"], "diffroar")
            >>> RunConfig(dtype="bfloat16").reject_unused(["seed"], "diffroar")
            Traceback (most recent call last):
            ...
            ValueError: diffroar does not use the common setting(s) dtype; it uses: seed
        """
        default = type(self)()
        unused = [f.name for f in dataclasses.fields(self)
                  if f.name not in used and getattr(self, f.name) != getattr(default, f.name)]
        if unused:
            raise ValueError(f"{check} does not use the common setting(s) {', '.join(unused)}; "
                             f"it uses: {', '.join(used)}")

    def record(self, x: torch.Tensor, target: Any, dev: torch.device, target_mode: str | None,
               method_objs: Mapping[str, Any], score_objs: Mapping[str, Any],
               model: Any = None) -> dict[str, Any]:
        """The settings every check records in ``run.json``, the same keys in every check;
        with ``model`` (a private copy), the methods' choices for it (Grad-CAM's layer)."""
        if model is not None:
            methods = {label: m.resolved_settings(model, x[:1])
                       for label, m in method_objs.items()}
        else:
            methods = {label: m.settings() for label, m in method_objs.items()}
        out = {
            "seed": self.seed,
            "target_mode": target_mode,
            "target_given": target is not None,
            "batch_size": self.batch_size,
            "device": str(dev),
            "n_samples": int(x.shape[0]),
            "input_shape": list(x.shape[1:]),
            "n_examples": max(0, min(self.n_examples, int(x.shape[0]))),
            "methods": methods,
            "controls": [label for label, m in method_objs.items() if m.is_control],
            "scores": {name: s.settings() for name, s in score_objs.items()},
            "versions": versions(),
        }
        if self.dtype is not None:  # only mixed precision is recorded: default runs unchanged
            out["dtype"] = self.dtype
        return out


def versions() -> dict[str, str]:
    """Versions of Python, the platform and every library a result depends on."""
    import numpy
    import pandas
    import scipy
    import skimage

    from .. import __version__

    return {
        "saliency_sanity": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "scikit-image": skimage.__version__,
        "pandas": pandas.__version__,
    }
