#!/usr/bin/env bash
# `make eval-manuals`: rag eval on the two real-manual sets, with whatever settings RAG_CONFIG / --config give.
#   apache2: eval/datasets/apache2_eval.jsonl over Debian's apache2-doc (the English manual, 244 pages)
#   gitdoc:  eval/datasets/gitdoc_eval.jsonl over Debian's git-doc (its first 200 HTML pages, as bench-hybrid uses)
# The manuals are installed from Debian's packages when missing (as root); only the questions ship here.
# Each store is ingested once under data/eval-<set>; reports go to eval-runs/<set>-<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
APACHE=/usr/share/doc/apache2-doc/manual/en
GITDOC=/usr/share/doc/git-doc
need() {  # need PACKAGE PATH
    [ -e "$2" ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y -q "$1" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$1" >/dev/null; }
    fi
    [ -e "$2" ] || { echo "eval-manuals: $2 is missing: install Debian's $1 (apt install $1)" >&2; exit 2; }
}
need apache2-doc "$APACHE"
need git-doc "$GITDOC"
stamp=$(date +%Y%m%d-%H%M%S)
"$BIN/rag" --data-dir data/eval-apache2 ingest --if-empty --public "$APACHE"
# The first 200 HTML pages by relative path, as eval/bench_ingest.py's corpus_files picks them.
mapfile -t pages < <("$BIN/python" -c 'from pathlib import Path; from eval.bench_ingest import corpus_files
print("\n".join(map(str, corpus_files(Path("'"$GITDOC"'"), 200))))')
"$BIN/rag" --data-dir data/eval-gitdoc ingest --if-empty --public "${pages[@]}"
for set in apache2 gitdoc; do
    "$BIN/rag" --data-dir "data/eval-$set" eval --dataset "eval/datasets/${set}_eval.jsonl" --out "eval-runs/$set-$stamp" "$@"
    "$BIN/python" -m eval.evidence_coverage --dataset "eval/datasets/${set}_eval.jsonl" --data-dir "data/eval-$set"
done
