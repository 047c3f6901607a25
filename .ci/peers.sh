#!/usr/bin/env bash
# Builds the real components the `real` test tier runs against (tests/real/), once, from the Go
# module proxy, pinned by version, into
#   ${XDG_CACHE_HOME:-~/.cache}/rotator/peers/<name>-<version>/
# and reuses a folder that is already there (delete it to rebuild). Each folder gets BUILD-INFO
# with the build's wall time and the folder's size. Nothing here is committed: upstream is built,
# never copied.
#   .ci/peers.sh            build (or reuse) everything, print the cache folder
#   .ci/peers.sh --check    exit 0 when everything is built, 1 (naming what is missing) otherwise
# Needs Go (the version k8s.io/kubernetes' go.mod names, 1.26 for v1.37) and the module proxy.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Versions: .ci/peers.env (tests/real reads it too); the environment may override each.
saved_ss="${SEALED_SECRETS_VERSIONS:-}" saved_k="${KUBERNETES_VERSION:-}" saved_e="${ETCD_VERSION:-}"
# shellcheck source=peers.env
. "$here/peers.env"
SEALED_SECRETS_VERSIONS="${saved_ss:-$SEALED_SECRETS_VERSIONS}"
KUBERNETES_VERSION="${saved_k:-$KUBERNETES_VERSION}"
ETCD_VERSION="${saved_e:-$ETCD_VERSION}"

peers="${ROTATOR_PEERS:-${XDG_CACHE_HOME:-$HOME/.cache}/rotator/peers}"
check_only=0
[ "${1:-}" = "--check" ] && check_only=1

# Small binaries without paths of this machine in them: the kube-apiserver alone is ~150 MB otherwise.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-trimpath"
export CGO_ENABLED=0
ldflags_base="-s -w"
missing=()

log() { echo "peers: $*" >&2; }

# have NAME VERSION BINARY...: true when every binary is in the cache folder.
have() {
  local dir="$peers/$1-$2"; shift 2
  local b
  for b in "$@"; do [ -x "$dir/$b" ] || return 1; done
}

# finish DIR STAGE START: move the built binaries from STAGE into DIR and record time and disk.
finish() {
  local dir="$1" stage="$2" start="$3"
  rm -rf "$dir"
  chmod 0755 "$stage"
  mv "$stage" "$dir"
  {
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) with $(go env GOVERSION)"
    echo "wall_seconds: $(( $(date +%s) - start ))"
    echo "bytes: $(du -sb "$dir" | cut -f1)"
  } >"$dir/BUILD-INFO"
  log "built $(basename "$dir") in $(( $(date +%s) - start ))s, $(du -sh "$dir" | cut -f1)"
}

# go_tool NAME VERSION MODULE PKG...: `go install PKG@VERSION` for packages of MODULE (a module
# whose go.mod has no replace directives) into peers/NAME-VERSION/. Used by other tools too
# (e.g. helm, promtool): one folder per tool and version.
go_tool() {
  local name="$1" version="$2" module="$3"; shift 3
  local bins=() p
  for p in "$@"; do bins+=("$(basename "$p")"); done
  if have "$name" "$version" "${bins[@]}"; then return 0; fi
  if [ "$check_only" = 1 ]; then missing+=("$name-$version"); return 0; fi
  log "building $name $version (go install $module)"
  local start stage
  start=$(date +%s)
  stage="$(mktemp -d "$peers/.stage-$name-XXXX")"
  stage_dirs+=("$stage")
  for p in "$@"; do
    GOBIN="$stage" go install -ldflags="$ldflags_base" "$p@$version"
  done
  finish "$peers/$name-$version" "$stage" "$start"
}

# module_file NAME VERSION MODULE PATH: copy PATH of MODULE at VERSION (from the module proxy)
# into peers/NAME-VERSION/ beside the binaries, e.g. the CRD the controller serves.
module_file() {
  local dir="$peers/$1-$2" version="$2" module="$3" path="$4"
  [ -f "$dir/$(basename "$path")" ] && return 0
  if [ "$check_only" = 1 ]; then missing+=("$1-$2/$(basename "$path")"); return 0; fi
  [ -d "$dir" ] || return 0  # its build failed or was skipped
  local src
  src="$(go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  cp "$src/$path" "$dir/" && chmod 0644 "$dir/$(basename "$path")"
}

# go_wrapped NAME VERSION MODULE LDFLAGS STAGING_VERSION [BIN=]PKG...: builds packages of MODULE at VERSION from a
# throw-away wrapper module, for modules whose own go.mod replaces sibling modules with local
# paths (k8s.io/kubernetes: its staging modules; etcd's server: api, client, pkg). `go install
# pkg@version` refuses those; the wrapper requires MODULE and replaces each local-path module with
# its published release (STAGING_VERSION for k8s.io/*, VERSION otherwise).
go_wrapped() {
  local name="$1" version="$2" module="$3" ldflags="$4" staging_version="$5"; shift 5
  local bins=() pkgs=() p
  for p in "$@"; do
    case "$p" in *=*) bins+=("${p%%=*}"); pkgs+=("${p#*=}") ;; *) bins+=("$(basename "$p")"); pkgs+=("$p") ;; esac
  done
  if have "$name" "$version" "${bins[@]}"; then return 0; fi
  if [ "$check_only" = 1 ]; then missing+=("$name-$version"); return 0; fi
  log "building $name $version (wrapper module around $module)"
  local start stage wrap gomod
  start=$(date +%s)
  stage="$(mktemp -d "$peers/.stage-$name-XXXX")"
  stage_dirs+=("$stage")
  wrap="$stage/.wrapper"
  mkdir -p "$wrap"
  gomod="$(go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  {
    echo "module rotator.invalid/peers/$name"
    grep -E '^go [0-9.]+$' "$gomod"
    echo "require $module $version"
    # `a/b => ../x` or `a/b => ./staging/src/a/b`: the module path is the first field.
    sed -n -E 's#^[[:space:]]*(replace[[:space:]]+)?([^[:space:]]+)[[:space:]]+=>[[:space:]]+\.\.?/.*#\2#p' "$gomod" |
      while read -r m; do
        case "$m" in k8s.io/*) echo "replace $m => $m $staging_version" ;; *) echo "replace $m => $m $version" ;; esac
      done
  } >"$wrap/go.mod"
  (
    cd "$wrap"
    # A tools file so `go mod tidy` keeps what the packages need.
    { echo "//go:build tools"; echo "package tools"; echo "import ("
      for p in "${pkgs[@]}"; do echo "  _ \"$p\""; done; echo ")"; } >tools.go
    go mod tidy
    local i
    for i in "${!pkgs[@]}"; do go build -o "$stage/${bins[$i]}" -ldflags="$ldflags" "${pkgs[$i]}"; done
  )
  rm -rf "$wrap"
  finish "$peers/$name-$version" "$stage" "$start"
}

main() {
  if [ "$check_only" = 0 ] && ! command -v go >/dev/null; then
    echo "peers: go not found: install Go >= 1.26 (https://go.dev/dl/) and put it on PATH" >&2
    exit 2
  fi
  mkdir -p "$peers"
  for v in $SEALED_SECRETS_VERSIONS; do
    go_tool sealed-secrets-controller "$v" github.com/bitnami-labs/sealed-secrets \
      github.com/bitnami-labs/sealed-secrets/cmd/controller
    module_file sealed-secrets-controller "$v" github.com/bitnami-labs/sealed-secrets \
      helm/sealed-secrets/crds/bitnami.com_sealedsecrets.yaml
    go_tool kubeseal "$v" github.com/bitnami-labs/sealed-secrets \
      github.com/bitnami-labs/sealed-secrets/cmd/kubeseal
  done
  go_wrapped etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3 "$ldflags_base" "" etcd=go.etcd.io/etcd/server/v3
  # The version the binaries report (kubectl version, /version): without it they say v0.0.0.
  kv="k8s.io/component-base/version"
  kminor="${KUBERNETES_VERSION#v1.}"; kminor="${kminor%%.*}"
  kldflags="$ldflags_base -X $kv.gitVersion=$KUBERNETES_VERSION -X $kv.gitMajor=1 -X $kv.gitMinor=$kminor"
  kldflags="$kldflags -X $kv.gitTreeState=clean"
  go_wrapped kubernetes "$KUBERNETES_VERSION" k8s.io/kubernetes "$kldflags" "v0.${KUBERNETES_VERSION#v1.}" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl

  if [ "$check_only" = 1 ]; then
    if [ "${#missing[@]}" -gt 0 ]; then
      echo "not built: ${missing[*]} (in $peers; build with .ci/peers.sh)"
      exit 1
    fi
    exit 0
  fi
  echo "$peers"
}

# A stage folder of a build that did not finish is removed (a rerun starts it again).
stage_dirs=()
cleanup() { [ "${#stage_dirs[@]}" -eq 0 ] || rm -rf "${stage_dirs[@]}"; }
trap cleanup EXIT
# Everything runs from main, parsed whole before it starts: editing this file during a build is safe.
main "$@"; exit
