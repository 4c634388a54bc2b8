#!/usr/bin/env bash
# Lints the generator scripts of pktgen-scripts/: `luac -p` on every .lua (Pktgen-DPDK
# scripts) and `shellcheck` on every .sh. A missing tool is reported and its check skipped
# (install: apt-get install lua5.4 shellcheck). Exit 1 if any check fails.
set -euo pipefail

usage() {
    echo "usage: $(basename "$0") [-h|--help]"
    echo "Runs luac -p on pktgen-scripts/**/*.lua and shellcheck on pktgen-scripts/**/*.sh."
}

case "${1:-}" in
-h | --help)
    usage
    exit 0
    ;;
"") ;;
*)
    usage >&2
    exit 2
    ;;
esac

dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
failed=0

luac=""
for c in luac luac5.4 luac5.3 luac5.1; do
    if command -v "$c" >/dev/null 2>&1; then
        luac=$c
        break
    fi
done

mapfile -t lua_files < <(find "$dir" -name '*.lua' -type f | sort)
mapfile -t sh_files < <(find "$dir" -name '*.sh' -type f | sort)

if [[ -z "$luac" ]]; then
    echo "check.sh: SKIP luac -p on ${#lua_files[@]} Lua file(s): no luac (apt-get install lua5.4)"
else
    for f in "${lua_files[@]}"; do
        if "$luac" -p "$f"; then
            echo "check.sh: ok   $luac -p ${f#"$dir"/}"
        else
            echo "check.sh: FAIL $luac -p ${f#"$dir"/}"
            failed=1
        fi
    done
fi

if ! command -v shellcheck >/dev/null 2>&1; then
    echo "check.sh: SKIP shellcheck on ${#sh_files[@]} shell file(s): no shellcheck (apt-get install shellcheck)"
else
    for f in "${sh_files[@]}"; do
        if shellcheck "$f"; then
            echo "check.sh: ok   shellcheck ${f#"$dir"/}"
        else
            echo "check.sh: FAIL shellcheck ${f#"$dir"/}"
            failed=1
        fi
    done
fi

exit "$failed"
