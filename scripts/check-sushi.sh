#!/usr/bin/env bash
# Recompile the consult IG's FSH (profiles/fsh) with SUSHI and compare with the committed JSON
# (profiles/*.json and conformance/ImplementationGuide-*.json). Exits non-zero on drift.
#
#   scripts/check-sushi.sh            # check (CI)
#   scripts/check-sushi.sh --update   # rewrite the committed JSON from the FSH
#
# Works offline: SUSHI cannot download FHIR packages here, so the script builds a FHIR package
# cache (HOME/.fhir/packages, where SUSHI's fhir-package-loader looks) from the local tarballs:
# hl7.fhir.r4.core 4.0.1 (fhir_exchange/packages) and hl7.fhir.kr.core 2.0.0 (fhir_exchange/packages, or KRCORE_TGZ).
# KR Core ships differentials only and SUSHI needs its parents' snapshots, so the cached KR Core
# StructureDefinitions get a provisional snapshot: the base snapshot with the differential merged
# in. It only has to be good enough for SUSHI to place our own differential (which is what we
# commit); the server and the validator never see it.
#
# Environment: SUSHI_VERSION (default 3.21.0), SUSHI_DIR (npm prefix for fsh-sushi, default
# .sushi in the repository; never committed), KRCORE_TGZ, PYTHON (default python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUSHI_VERSION="${SUSHI_VERSION:-3.21.0}"
SUSHI_DIR="${SUSHI_DIR:-$ROOT/.sushi}"
CORE_TGZ="$ROOT/fhir_exchange/packages/hl7.fhir.r4.core-4.0.1.tgz"
KRCORE_TGZ="${KRCORE_TGZ:-$ROOT/fhir_exchange/packages/hl7.fhir.kr.core-2.0.0.tgz}"
PYTHON="${PYTHON:-python3}"
MODE=check
[[ "${1:-}" == "--update" ]] && MODE=update

SUSHI="$SUSHI_DIR/node_modules/.bin/sushi"
if ! [[ -x "$SUSHI" ]] || [[ "$("$SUSHI" --version 2>/dev/null | grep -o 'SUSHI v[0-9.]*' || true)" != "SUSHI v$SUSHI_VERSION" ]]; then
  echo "installing fsh-sushi@$SUSHI_VERSION into $SUSHI_DIR" >&2
  npm install --silent --no-audit --no-fund --prefix "$SUSHI_DIR" "fsh-sushi@$SUSHI_VERSION" >&2
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
CACHE="$WORK/home/.fhir/packages"
mkdir -p "$CACHE/hl7.fhir.r4.core#4.0.1" "$CACHE/hl7.fhir.kr.core#2.0.0"
tar xzf "$CORE_TGZ" -C "$CACHE/hl7.fhir.r4.core#4.0.1"
tar xzf "$KRCORE_TGZ" -C "$CACHE/hl7.fhir.kr.core#2.0.0"

"$PYTHON" - "$CACHE" <<'PY'
"""Give KR Core's differential-only StructureDefinitions a provisional snapshot for SUSHI."""
import copy
import json
import sys
from pathlib import Path

cache = Path(sys.argv[1])
core = cache / "hl7.fhir.r4.core#4.0.1" / "package"
kr = cache / "hl7.fhir.kr.core#2.0.0" / "package"
by_url = {}
for folder in (core, kr):
    for f in folder.glob("StructureDefinition-*.json"):
        sd = json.loads(f.read_text(encoding="utf-8"))
        by_url[sd["url"]] = (f, sd)


def unsliced(eid):
    return ".".join(seg.split(":")[0] for seg in eid.split("."))


def parent_id(eid):
    head, _, last = eid.rpartition(".")
    return eid.rpartition(":")[0] if ":" in last else head


def snapshot(url):
    f, sd = by_url[url]
    if "snapshot" in sd:
        return sd["snapshot"]["element"]
    elements = copy.deepcopy(snapshot(sd["baseDefinition"]))
    for e in sd["differential"]["element"]:
        ids = [x["id"] for x in elements]
        if e["id"] in ids:
            target = elements[ids.index(e["id"])]
        else:
            template = next((x for x in elements if x["id"] == unsliced(e["id"])), None)
            if template is None:
                continue  # an element below a type SUSHI can unfold itself
            target = copy.deepcopy(template)
            target["id"] = e["id"]
            target.pop("slicing", None)
            last = e["id"].rpartition(".")[2]
            if ":" in last:
                target["sliceName"] = last.split(":")[1]
            owner = parent_id(e["id"])
            pos = max(i for i, x in enumerate(ids) if x == owner or x.startswith((owner + ".", owner + ":")))
            elements.insert(pos + 1, target)
        for k, v in e.items():
            if k not in ("id", "path"):
                target[k] = copy.deepcopy(v)
    sd["snapshot"] = {"element": elements}
    f.write_text(json.dumps(sd, ensure_ascii=False, indent=2), encoding="utf-8")
    return elements


for url, (f, sd) in list(by_url.items()):
    if f.parent == kr:
        snapshot(url)
PY

cp -r "$ROOT/profiles/fsh" "$WORK/ig"
rm -rf "$WORK/ig/fsh-generated"
if ! HOME="$WORK/home" "$SUSHI" build "$WORK/ig" > "$WORK/sushi.log" 2>&1 || grep -q "^error" "$WORK/sushi.log"; then
  cat "$WORK/sushi.log" >&2
  echo "check-sushi: SUSHI failed" >&2
  exit 2
fi

# Flat layout: profiles/*.json (+ package.json), conformance/ImplementationGuide-*.json.
OUT="$WORK/out"
mkdir -p "$OUT/profiles" "$OUT/conformance"
for f in "$WORK/ig/fsh-generated/resources/"*.json; do
  case "$(basename "$f")" in
    ImplementationGuide-*) cp "$f" "$OUT/conformance/" ;;
    *) cp "$f" "$OUT/profiles/" ;;
  esac
done
cat > "$OUT/profiles/package.json" <<'JSON'
{
  "name": "fhir-exchange.consult",
  "version": "0.1.0",
  "type": "fhir.ig",
  "title": "fhir-exchange Remote Consultation Implementation Guide",
  "canonical": "http://fhir-exchange.org/fhir",
  "url": "http://fhir-exchange.org/fhir",
  "fhirVersions": ["4.0.1"],
  "dependencies": {
    "hl7.fhir.r4.core": "4.0.1",
    "hl7.fhir.kr.core": "2.0.0"
  },
  "author": "fhir-exchange",
  "license": "Apache-2.0",
  "description": "Compiled from profiles/fsh with SUSHI by scripts/check-sushi.sh --update; do not edit by hand."
}
JSON

if [[ "$MODE" == update ]]; then
  rm -f "$ROOT"/profiles/*.json "$ROOT"/conformance/ImplementationGuide-*.json
  cp "$OUT"/profiles/*.json "$ROOT/profiles/"
  cp "$OUT"/conformance/*.json "$ROOT/conformance/"
  grep -E "^(warn|error)" "$WORK/sushi.log" >&2 || true
  echo "check-sushi: updated $(ls "$OUT"/profiles/*.json | wc -l) files in profiles/ and conformance/" >&2
  exit 0
fi

status=0
mkdir -p "$WORK/committed/profiles" "$WORK/committed/conformance"
cp "$ROOT"/profiles/*.json "$WORK/committed/profiles/" 2>/dev/null || true
cp "$ROOT"/conformance/ImplementationGuide-*.json "$WORK/committed/conformance/" 2>/dev/null || true
diff -ru "$WORK/committed" "$OUT" || status=1
if [[ $status -ne 0 ]]; then
  echo "check-sushi: the committed JSON differs from the FSH; run scripts/check-sushi.sh --update" >&2
else
  echo "check-sushi: profiles/ and conformance/ agree with profiles/fsh" >&2
fi
exit $status
