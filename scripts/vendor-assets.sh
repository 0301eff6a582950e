#!/usr/bin/env bash
# Fetches the map and chart libraries the operations screen serves (api/screen/vendor/): pinned
# versions from the npm registry, each tarball checked against its SHA-256 before anything is
# unpacked. Run by a developer when upgrading; the files are committed, so neither CI nor a
# deployment needs npm, a build step or the internet.
#
#   bash scripts/vendor-assets.sh        (needs npm; to upgrade, change a version and its sha256)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=api/screen/vendor

# name version sha256-of-the-npm-tarball
packages=(
  "leaflet 1.9.4 84c65a256e50657896f54c33bd857b6849ebe94c817803be818bf32a3dde0b77"
  "supercluster 9.1.0 b43b5108967e4ee37a7de0489e36385a0caeb81b3dd1dd8017b58a98dd91a8d0"
  "uplot 1.6.32 4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d"
)
# The files taken from each package (under package/).
declare -A files=(
  [leaflet]="dist/leaflet.js dist/leaflet.css LICENSE"
  [supercluster]="dist/supercluster.min.js LICENSE"
  [uplot]="dist/uPlot.iife.min.js dist/uPlot.min.css LICENSE"
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
readme="$out/README.md"
mkdir -p "$out"
{
  echo "# Vendored libraries of the operations screen"
  echo
  echo "Fetched by \`scripts/vendor-assets.sh\` from the npm registry (pinned, SHA-256 checked);"
  echo "served by the API under /screen/assets/vendor/. Do not edit by hand."
  echo
  echo "| package | version | licence | tarball sha256 |"
  echo "|---|---|---|---|"
} > "$readme"
for entry in "${packages[@]}"; do
  read -r name version sum <<<"$entry"
  (cd "$work" && npm pack --silent "$name@$version" >/dev/null)
  tarball="$work/$name-$version.tgz"
  echo "$sum  $tarball" | sha256sum --check --quiet
  mkdir -p "$work/$name" "$out/$name"
  tar xzf "$tarball" -C "$work/$name"
  for file in ${files[$name]}; do
    cp "$work/$name/package/$file" "$out/$name/$(basename "$file")"
  done
  licence=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['license'])" \
    "$work/$name/package/package.json")
  echo "| $name | $version | $licence | \`$sum\` |" >> "$readme"
done
echo "vendored into $out:"; find "$out" -type f | sort
