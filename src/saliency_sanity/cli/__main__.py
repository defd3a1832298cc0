"""``python -m saliency_sanity.cli``: the same command line as ``saliency-sanity``."""

from saliency_sanity.cli import main

if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess in the tests
    raise SystemExit(main())
