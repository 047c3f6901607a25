#!/usr/bin/env bash
# Build the Go tools the tests use into $1 (default: $ROTATOR_TOOLS_BIN, else
# ~/.cache/rotator/tools-bin), from the Go module proxy:
#   helm      go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION   (tests/test_chart.py)
#   promtool  go build from .ci/promtool/ (tests/test_metrics.py): prometheus' go.mod has
#             replace directives, which `go install pkg@version` refuses, so a small module
#             here requires prometheus with the same replaces and pins every dependency
#             (.ci/promtool/go.sum).
# Both builds are CPU-heavy (minutes on 2 cores): they run under nice -n 19, once; a stamp per
# tool records the version built. Without Go the tools are not built and their tests skip
# with one line naming this script.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${1:-${ROTATOR_TOOLS_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/rotator/tools-bin}}"
HELM_VERSION="v3.17.3"
PROMTOOL_VERSION="$(grep -oE 'github.com/prometheus/prometheus v[0-9.]+' "$here/promtool/go.mod" | awk '{print $2}')"
if ! command -v go >/dev/null; then
  echo "tools-go: go not found; helm and promtool are not built (their tests skip)" >&2
  exit 0
fi
mkdir -p "$bin"
fresh() {  # fresh TOOL VERSION: true when $bin/TOOL was built at VERSION
  [ -x "$bin/$1" ] && [ -f "$bin/.$1-version" ] && [ "$(cat "$bin/.$1-version")" = "$2" ]
}
if ! fresh helm "$HELM_VERSION"; then
  echo "tools-go: building helm $HELM_VERSION into $bin" >&2
  (cd / && GOBIN="$bin" nice -n 19 go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
  echo "$HELM_VERSION" > "$bin/.helm-version"
fi
if ! fresh promtool "$PROMTOOL_VERSION"; then
  echo "tools-go: building promtool $PROMTOOL_VERSION into $bin" >&2
  (cd "$here/promtool" && GOFLAGS=-mod=readonly nice -n 19 \
     go build -trimpath -o "$bin/promtool" github.com/prometheus/prometheus/cmd/promtool)
  echo "$PROMTOOL_VERSION" > "$bin/.promtool-version"
fi
