#!/usr/bin/env bash
# Regenerates the shell completions and the man page under contrib/ from the timens binary, so
# they always describe the real command line. mount-helper/tests/generated.rs fails when the
# committed files differ from what the binary prints.
#
#   contrib/generate.sh                    # builds timens (debug) and uses it
#   contrib/generate.sh target/release/timens
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ge 1 ]; then
    bin=$1
else
    cargo build --quiet -p timens-cli
    bin=${CARGO_TARGET_DIR:-target}/debug/timens
fi
[ -x "$bin" ] || { echo "generate.sh: no executable at $bin" >&2; exit 1; }

mkdir -p contrib/completions contrib/man
# Write to a temporary file first: a failing generator must not leave a truncated file behind.
gen() {
    local out=$1
    shift
    "$bin" "$@" >"$out.tmp"
    mv "$out.tmp" "$out"
    echo "wrote $out"
}
gen contrib/completions/timens.bash completions bash
gen contrib/completions/_timens completions zsh
gen contrib/completions/timens.fish completions fish
gen contrib/man/timens.1 man
