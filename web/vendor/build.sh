#!/usr/bin/env bash
# Rebuilds web/vendor/graph.js: sigma.js + graphology as one IIFE bundle.
# The bundle is committed so the server (rust-embed) needs no JS toolchain;
# run this only to change versions. Versions are pinned so rebuilds are
# reproducible.
set -euo pipefail

SIGMA_VERSION=3.0.3
GRAPHOLOGY_VERSION=0.26.0
GRAPHOLOGY_TYPES_VERSION=0.24.8
ESBUILD_VERSION=0.28.2

here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cd "$work"
cat > package.json <<JSON
{ "name": "trawl-vendor", "private": true, "version": "0.0.0" }
JSON
npm install --no-audit --no-fund --save-exact \
  "sigma@$SIGMA_VERSION" \
  "graphology@$GRAPHOLOGY_VERSION" \
  "graphology-types@$GRAPHOLOGY_TYPES_VERSION" \
  "esbuild@$ESBUILD_VERSION" >/dev/null

cat > entry.js <<'JS'
import Graph from "graphology";
import Sigma from "sigma";
import { EdgeArrowProgram, EdgeLineProgram, EdgeRectangleProgram } from "sigma/rendering";
window.graphology = { Graph };
window.Sigma = Sigma;
window.SigmaPrograms = { EdgeArrowProgram, EdgeLineProgram, EdgeRectangleProgram };
JS

banner="/* trawl vendor bundle: sigma@$SIGMA_VERSION graphology@$GRAPHOLOGY_VERSION (MIT). Rebuild with web/vendor/build.sh */"
./node_modules/.bin/esbuild entry.js --bundle --minify --format=iife \
  --target=es2019 --legal-comments=none --banner:js="$banner" \
  --outfile="$here/graph.js"
ls -l "$here/graph.js"
