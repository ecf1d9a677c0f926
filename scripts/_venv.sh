# Sourced by scripts/serve and scripts/test: make .venv with journeyd installed in it, with $EXTRAS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "journeyd needs Python 3.11 or newer as '$PYTHON' (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv || { echo "could not create a virtual environment: on Debian/Ubuntu, apt-get install python3-venv" >&2; exit 1; }
fi
pip_install() { .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@"; }
pip_install --upgrade pip
case ",${EXTRAS:-}," in
  *,diffusers,*)
    # torch first, on its own: otherwise a dependency may pull a GPU build this machine cannot use.
    .venv/bin/python -c 'import torch' 2>/dev/null || pip_install "${TORCH_SPEC:-torch==2.13.0}"
    ;;
esac
pip_install -e ".${EXTRAS:+[$EXTRAS]}"
