#!/usr/bin/env bash
# Publishes qtip and the test executables self-contained (linux-x64) into one folder and packs it as
# .gpu/qtip.tar.xz, for machines without .NET (the GPU box). Usage: eng/publish-portable.sh [--no-tests]
set -euo pipefail
cd "$(dirname "$0")/.."
out=.gpu/publish/qtip
rm -rf .gpu/publish && mkdir -p "$out"
common=(-c Release -r linux-x64 --self-contained true -p:InvariantGlobalization=true -p:DebugType=none -p:GenerateDocumentationFile=false)
dotnet publish src/Qtip.Tool "${common[@]}" -o "$out" >/dev/null
if [ "${1:-}" != "--no-tests" ]; then
  for t in tests/Qtip.*.Tests/*.csproj; do
    grep -q "$(basename "$t")" Qtip.sln || continue
    dotnet publish "$t" "${common[@]}" -o "$out" >/dev/null
  done
fi
cp eng/gpu/*.sh "$out/"
tar -C .gpu/publish -cf - qtip | xz -T0 -6 > .gpu/qtip.tar.xz
ls -la .gpu/qtip.tar.xz
