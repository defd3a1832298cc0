"""The README's demo numbers come from the code: they may not drift from the demo's output."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("readme_demo", ROOT / "tools" / "readme_demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_paragraph_shape_and_drift():
    tool = _tool()
    nums = {"guided_backprop": [0.9, 0.8], "gradient": [0.5, 0.3],
            "gradient_x_input": [0.99, 0.98], "integrated_gradients": [0.99, 0.99],
            "random_gaussian": [0.01, -0.02], "random_uniform": [0.0, 0.01]}
    text = f"x\n{tool.START}\n{tool.paragraph(nums)}\n{tool.END}\n"
    assert tool.drift(text, nums) == 0.0
    assert "stays above the gradient" in tool.paragraph(nums)
    assert tool.drift(text, {**nums, "gradient": [0.52, 0.3]}) == pytest.approx(0.02)
    worse = {**nums, "gradient": [0.95, 0.3]}
    assert "is not above" in tool.paragraph(worse)


@pytest.mark.slow
def test_readme_numbers_match_the_demo(tmp_path):
    tool = _tool()
    result = tool.demo_result(tmp_path / "demo")
    nums = tool.numbers(result)
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    d = tool.drift(text, nums)
    # The demo trains its model, and float32 training on another CPU ends at another model:
    # measured 0.03 between the machine that wrote the README and an AMD EPYC (AVX-512) one,
    # while a real change, the demo with seed 1 instead of 0, moves them by 0.05 (same machine).
    # The line between: 0.04 (docs/reproducibility.md).
    assert d <= 0.04, (f"README's demo numbers drift by {d:.3f}; run python "
                       f"tools/readme_demo.py\nnow: {tool.paragraph(nums)}")
