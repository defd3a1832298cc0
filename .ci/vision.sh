#!/usr/bin/env bash
# The second environment: torchvision, timm, transformers and zennit, whose tests carry the
# `vision` marker (in the main environment they skip with a message). torchvision must be the
# build made for its torch, hence the pinned pair. An install that fails is reported and the
# step skipped (not fatal); a test that fails is.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV="${VISION_VENV:-${TMPDIR:-/tmp}/saliency-sanity-vision-venv}"
start=$(date +%s)
if python3 -m venv "$VENV" \
    && "$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1 \
    && "$VENV/bin/python" -m pip install -q -e '.[test,vision,hf]' zennit; then
  echo "vision environment ready in $(( $(date +%s) - start )) s ($VENV)"
else
  echo "the vision environment did not install (after $(( $(date +%s) - start )) s): the" \
       "torchvision/timm/transformers/zennit tests are skipped"
  exit 0
fi
"$VENV/bin/python" -m pytest -q -m vision -p no:cacheprovider
