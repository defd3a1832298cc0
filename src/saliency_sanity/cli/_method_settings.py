"""``--method-settings``: settings of the methods named in ``--methods``, from the command line.

Two forms, one meaning:

- ``NAME=JSON;NAME=JSON``: e.g. ``rise={"n_masks":1000,"s":6};occlusion={"patch":5}``;
- a path to a JSON file holding ``{"rise": {"n_masks": 1000}, "occlusion": {"patch": 5}}``
  (the same object may also be given inline, starting with ``{``).

The settings are checked before any work (unknown method, unknown setting, bad JSON: exit 2,
nothing written) and reach the check as ``{name: (name, settings)}`` method specs, so the
methods' resolved settings land in ``run.json`` and in the run's fingerprint as usual.

LRP with the ``z_box`` rule (``lrp_epsilon_gamma_box``, ``lrp`` with that composite) needs the
input data's bounds; without ``low``/``high`` they are filled from the loaded inputs' range.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ._common import csv_list

SYNTAX = ("NAME=JSON;NAME=JSON (e.g. 'rise={\"n_masks\":1000};occlusion={\"patch\":5}') or a "
          "JSON file {\"NAME\": {...}}")


def add_option(p: argparse.ArgumentParser) -> None:
    """Add ``--method-settings`` to a subcommand that takes ``--methods``."""
    p.add_argument("--method-settings", default=None, metavar="NAME=JSON;...|FILE.json",
                   help="settings of methods listed in --methods, e.g. 'rise={\"n_masks\":1000,"
                        "\"s\":6};occlusion={\"patch\":5,\"stride\":2}', or a JSON file "
                        "{\"rise\": {...}}; box-bounded LRP gets low/high from the data's "
                        "range unless given")


def _bad_json(where: str, err: json.JSONDecodeError) -> ValueError:
    return ValueError(f"--method-settings: bad JSON {where} at character {err.pos + 1} "
                      f"(line {err.lineno}, column {err.colno}): {err.msg}; expected {SYNTAX}")


def parse(text: str | None) -> dict[str, dict[str, Any]]:
    """``--method-settings`` as ``{method: {setting: value}}`` (syntax only, no method check).

    Example:
        >>> parse('rise={"n_masks": 10, "s": 4}; occlusion={"patch": 3}')
        {'rise': {'n_masks': 10, 's': 4}, 'occlusion': {'patch': 3}}
        >>> parse('{"rise": {"p": 0.3}}')
        {'rise': {'p': 0.3}}
        >>> parse(None)
        {}
    """
    if text is None or not text.strip():
        return {}
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise _bad_json("in the settings object", err) from None
        return _as_table(obj, "the settings object")
    if "=" not in stripped:
        path = Path(stripped)
        if not path.is_file():
            raise ValueError(f"--method-settings {text!r}: no such file, and not "
                             f"NAME=JSON; expected {SYNTAX}")
        try:
            obj = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise _bad_json(f"in {path}", err) from None
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"--method-settings: cannot read {path}: {err}") from None
        return _as_table(obj, str(path))
    out: dict[str, dict[str, Any]] = {}
    decoder = json.JSONDecoder()
    i, n = 0, len(text)
    while i < n:
        eq = text.find("=", i)
        if eq < 0:
            raise ValueError(f"--method-settings: expected NAME=JSON at character {i + 1}, got "
                             f"{text[i:]!r}; expected {SYNTAX}")
        name = text[i:eq].strip()
        if not name:
            raise ValueError(f"--method-settings: a method name is missing before '=' at "
                             f"character {eq + 1}; expected {SYNTAX}")
        j = eq + 1
        while j < n and text[j].isspace():
            j += 1
        try:
            value, j = decoder.raw_decode(text, j)
        except json.JSONDecodeError as err:
            raise _bad_json(f"for {name!r}", err) from None
        if not isinstance(value, dict):
            raise ValueError(f"--method-settings: the settings of {name!r} must be a JSON "
                             f"object {{...}}, got {json.dumps(value)}")
        if name in out:
            raise ValueError(f"--method-settings: {name!r} is given twice; give it once")
        out[name] = value
        while j < n and text[j].isspace():
            j += 1
        if j < n and text[j] != ";":
            raise ValueError(f"--method-settings: expected ';' after the settings of {name!r} "
                             f"at character {j + 1}, got {text[j:j + 10]!r}")
        i = j + 1
    return out


def _as_table(obj: Any, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(obj, dict) or not all(isinstance(v, dict) for v in obj.values()):
        raise ValueError(f"--method-settings: {where} must be a JSON object {{\"NAME\": "
                         "{\"setting\": value}}, one object of settings per method")
    return {str(k): dict(v) for k, v in obj.items()}


def check(text: str | None, methods_csv: list[str] | None) -> dict[str, dict[str, Any]]:
    """Parse and validate ``--method-settings`` against ``--methods``; build every method with
    its settings so that an unknown setting fails now, with the method's own message.

    Example:
        >>> check('integrated_gradients={"steps": 8}', ["gradient", "integrated_gradients"])
        {'integrated_gradients': {'steps': 8}}
        >>> check('rise={"n_masks": 8}', ["gradient"])
        Traceback (most recent call last):
        ...
        ValueError: --method-settings names 'rise', which --methods (gradient) does not list; ...
    """
    from .. import methods

    table = parse(text)
    if not table:
        return table
    if methods_csv is None:
        raise ValueError("--method-settings needs --methods listing the methods it sets "
                         f"({', '.join(table)})")
    for name, settings in table.items():
        if name not in methods_csv:
            raise ValueError(f"--method-settings names {name!r}, which --methods "
                             f"({', '.join(methods_csv)}) does not list; add it there or fix "
                             "the name")
        try:
            methods.get(name, **settings)
        except TypeError as err:
            raise TypeError(f"--method-settings {name}: {err}") from None
        except ValueError as err:
            raise ValueError(f"--method-settings {name}: {err}") from None
    return table


def _needs_bounds(method: Any) -> bool:
    return bool(getattr(method, "_missing_bounds", False))


def data_bounds(x: Any, normalize: str | None = None) -> tuple[Any, Any]:
    """``(low, high)``: the smallest and largest value of ``x``; with ``--normalize``, both in
    the units the model's first layer sees, per channel when the normalization is.

    Example:
        >>> import torch
        >>> data_bounds(torch.tensor([[0.0, 0.5, 1.0]]))
        (0.0, 1.0)
        >>> data_bounds(torch.tensor([[0.0, 1.0]]), "0.5,0.25")
        (-2.0, 2.0)
    """
    lo, hi = float(x.min()), float(x.max())
    if not normalize:
        return lo, hi
    from ..io_inputs import parse_normalize

    means, stds = parse_normalize(normalize)
    lows = [(lo - m) / s for m, s in zip(means, stds, strict=True)]
    highs = [(hi - m) / s for m, s in zip(means, stds, strict=True)]
    return (lows[0], highs[0]) if len(lows) == 1 else (lows, highs)


def specs(methods_csv: list[str] | None, table: Mapping[str, Mapping[str, Any]], x: Any,
          normalize: str | None = None, log: Callable[[str], None] | None = None,
          record: dict[str, Any] | None = None) -> Any:
    """The check's ``methods=``: the ``--methods`` list unchanged when nothing is set, else
    ``{name: (name, settings)}``; box-bounded LRP without ``low``/``high`` gets the range of
    ``x`` (:func:`data_bounds`), said through ``log`` and stored in ``record[name]``.

    Example:
        >>> import torch
        >>> s = specs(["gradient", "lrp_epsilon_gamma_box"], {}, torch.tensor([[-1.0, 2.0]]))
        >>> s["lrp_epsilon_gamma_box"]
        ('lrp_epsilon_gamma_box', {'low': -1.0, 'high': 2.0})
        >>> specs(["gradient"], {}, torch.zeros(1, 2))
        ['gradient']
    """
    from .. import methods

    if methods_csv is None:
        return None
    full = {n: dict(table.get(n, {})) for n in methods_csv}
    filled = False
    for name, settings in full.items():
        if name not in methods.list() or not _needs_bounds(methods.get(name, **settings)):
            continue
        low, high = data_bounds(x, normalize)
        given = {k: settings[k] for k in ("low", "high") if settings.get(k) is not None}
        settings.update({"low": low, "high": high, **given})
        filled = True
        what = {k: settings[k] for k in ("low", "high") if k not in given}
        units = " (in the normalized units of --normalize)" if normalize else ""
        if log is not None:
            log(f"saliency-sanity: {name}: box bounds from the data's range{units}: "
                + ", ".join(f"{k}={v}" for k, v in what.items())
                + "; pass them in --method-settings to choose others")
        if record is not None:
            record[name] = {**what, "from": "data range" + units}
    if not table and not filled:
        return methods_csv
    if len(set(methods_csv)) != len(methods_csv):
        raise ValueError("--methods lists a method twice; list it once")
    return {n: ((n, s) if s else n) for n, s in full.items()}


def record(result: Any, given: Mapping[str, Any], boxes: Mapping[str, Any]) -> None:
    """Note in ``run.json`` what ``--method-settings`` gave and which box bounds came from the
    data (the methods' full settings are recorded under ``methods`` as always)."""
    if given:
        result.settings["method_settings"] = {k: dict(v) for k, v in given.items()}
    if boxes:
        result.settings["box_bounds_from_data"] = {k: dict(v) for k, v in boxes.items()}


def data_randomization_specs(args: argparse.Namespace, given: Mapping[str, Any],
                             log: Callable[[str], None]) -> tuple[Any, Any, dict[str, Any]]:
    """``(dataset, methods, boxes)`` for ``data-randomization``: the data set is loaded here
    (as the check would load it) only when a box-bounded LRP needs the range of its inputs."""
    from .. import data, methods

    names = csv_list(args.methods)
    boxes: dict[str, Any] = {}
    need = names is not None and any(
        n in methods.list() and _needs_bounds(methods.get(n, **given.get(n, {})))
        for n in names)
    if not need:
        return args.data, specs(names, given, None), boxes
    ds = data.load(args.data, n_train=args.subset, n_test=1000, seed=args.seed)
    x = ds.x_test[:args.n_samples]
    return ds, specs(names, given, x, None, log, boxes), boxes
