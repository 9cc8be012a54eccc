#!/usr/bin/env bash
# Create (or update) the virtual environment .venv with nndet installed in editable mode.
#   bash scripts/setup.sh          # runtime dependencies
#   bash scripts/setup.sh test     # plus the test tools (pytest, hypothesis, pycocotools, ruff)
# torch is installed first at the version pinned in scripts/constraints.txt and kept there
# while the rest installs; pip picks the build that fits the machine (CPU or CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${NNDET_VENV:-.venv}"
extras="${1:-}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "[setup] creating virtual environment $venv"
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

echo "[setup] installing torch ($(grep -E '^torch' scripts/constraints.txt))"
"${pip[@]}" install -c scripts/constraints.txt torch
echo "[setup] installing nndet and its dependencies"
if [ "$extras" = "test" ]; then
    "${pip[@]}" install -c scripts/constraints.txt -e ".[test]"
else
    "${pip[@]}" install -c scripts/constraints.txt -e .
fi

# Some dependencies pull in torchvision, whose build may not match a CPU-only torch and then
# fails at import. nndet never imports it; remove it (and timm, which needs it) when broken.
if ! "$venv/bin/python" -c "import torchvision" >/dev/null 2>&1; then
    "${pip[@]}" uninstall -y torchvision timm >/dev/null 2>&1 || true
fi
"$venv/bin/python" -c "import torch, nndet; print(f'[setup] nndet {nndet.__version__}, torch {torch.__version__}, cuda available: {torch.cuda.is_available()}')"
