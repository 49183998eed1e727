#!/usr/bin/env bash
# Idempotent setup: virtualenv, dependencies, SGLang (pinned), ScaleSim, patches, models.
#
#   CPU (no NVIDIA GPU): SGLang's CPU-capable dependencies from requirements/cpu.txt, then
#     sglang==0.5.23 with --no-deps (its wheel pulls the whole CUDA-13 stack), then our
#     pure-PyTorch sgl_kernel (kernels/sgl_kernel_cpu) and the patches in patches/.
#   GPU: `pip install -e ".[gpu,test]"`: SGLang with its own dependencies, no CPU kernel.
#
# Re-running is cheap: dependency installs are skipped while a stamp matching the hash of the
# requirement files exists in the virtualenv; patches and models are checked and reused.
# Environment: PYTHON (interpreter for the venv, default python3.11 or python3),
# VENV (default .venv), SCALESIM_DEVICE=cpu|gpu (default: gpu if nvidia-smi finds one),
# SCALESIM_CACHE (models and adapters; default ~/.cache/scalesim).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
SGLANG_PIN="sglang==0.5.23"

if [ -z "${SCALESIM_DEVICE:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    SCALESIM_DEVICE=gpu
  else
    SCALESIM_DEVICE=cpu
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtualenv $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

deps_hash=$(cat requirements/*.txt pyproject.toml kernels/sgl_kernel_cpu/pyproject.toml \
  | { echo "$SCALESIM_DEVICE $SGLANG_PIN"; cat; } | sha256sum | cut -c1-16)
stamp="$VENV/.scalesim-deps-$deps_hash"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing dependencies for $SCALESIM_DEVICE (a few minutes, about 7 GB)"
  if [ "$SCALESIM_DEVICE" = cpu ]; then
    "${PIP[@]}" install -qq -r requirements/cpu.txt -r requirements/test.txt
    "${PIP[@]}" install -qq --no-deps "$SGLANG_PIN"
    "${PIP[@]}" install -qq --no-deps -e kernels/sgl_kernel_cpu -e .
  else
    "${PIP[@]}" install -qq -e ".[gpu,test]" accelerate peft safetensors gguf
  fi
  rm -f "$VENV"/.scalesim-deps-*
  touch "$stamp"
else
  echo "[setup] dependencies up to date ($stamp)"
fi

"$VENV/bin/scalesim" patches apply
"$VENV/bin/scalesim" models all 2>&1 | grep -E '^(default|tiny) model' || true
test -f "$("$VENV/bin/python" -c 'from scalesim import paths; print(paths.default_model_path())')/.scalesim-complete"
echo "[setup] done"
