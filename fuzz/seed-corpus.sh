#!/bin/sh
# Builds the seed corpora of the fuzz targets from the captured kube-apiserver reviews
# (tests/fixtures of this repository, or $FIXTURES) into fuzz/corpus/<target>/. Needs python3.
# Idempotent: files are named by content hash; existing corpus entries are kept.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
fixtures=${FIXTURES:-$here/../tests/fixtures}
exec python3 - "$fixtures" "$here/corpus" <<'PY'
import glob, hashlib, json, os, sys

fixtures, out = sys.argv[1], sys.argv[2]

def put(target, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def compact(v):
    return json.dumps(v, separators=(",", ":"))

reviews = sorted(p for p in glob.glob(os.path.join(fixtures, "*.json")) if not p.endswith(".after.json"))
for path in reviews:
    raw = open(path, "rb").read()
    put("review_decode", raw)
    put("mutate", raw)
    review = json.loads(raw)
    req = review.get("request") or {}
    old, new = req.get("oldObject"), req.get("object")
    if old is not None and new is not None:
        put("diff", compact(old) + "\n" + compact(new))
    for obj in (old, new):
        for entry in ((obj or {}).get("metadata") or {}).get("managedFields") or []:
            if "fieldsV1" in entry:
                put("fieldsv1_decode", compact(entry["fieldsV1"]))
# The stored objects too: their managedFields name the writers of the captures.
for path in sorted(glob.glob(os.path.join(fixtures, "*.after.json"))):
    obj = json.load(open(path))
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        if "fieldsV1" in entry:
            put("fieldsv1_decode", compact(entry["fieldsV1"]))

paths = [
    "spec.template.spec.containers[*].resources",
    "spec.template.spec.priorityClassName",
    'metadata.labels["cost-center"]',
    "spec.template.spec.containers[name=web].image",
    "spec.ports[port=80,protocol=TCP].targetPort",
    'metadata.annotations["hallmark.dev/branch"]',
    'spec.containers[name="a,b"].env[name=X].value',
    'spec.finalizers[="kubernetes"]',
    "spec.template.spec.containers[0].args[3]",
    'data["a.b/c"]',
    '["weird \\"key\\" \\u00e9"].x[*][*]',
    "a[b=1,c=true,d=null]",
]
for p in paths:
    put("path_parse", p)
PY
