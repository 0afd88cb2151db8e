import json, os, urllib.request, urllib.parse

# Queries a Prometheus 2.42 loaded with data.om (see ../difftest.rs) and records its answers.
BASE = os.environ.get("PROM_URL", "http://127.0.0.1:19090")
meta = json.load(open("meta.json"))
t0, end = meta["t0"], meta["end"]
def get(path, params):
    url = BASE + "/api/v1/" + path + "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)
out = []
qs = [l.strip() for l in open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "queries.txt")) if l.strip()]
for q in qs:
    for (s, e, st) in [(t0 + 1800, t0 + 3 * 3600 + 1234, 60), (t0 + 7000, end + 900, 47), (t0 - 1800, t0 + 4000, 600)]:
        out.append({"query": q, "kind": "range", "start": s, "end": e, "step": st, "resp": get("query_range", {"query": q, "start": s, "end": e, "step": st})})
    for t in [t0 + 3600, end - 5, end + 200, t0 + 7317.5, t0 - 10, t0]:
        out.append({"query": q, "kind": "instant", "time": t, "resp": get("query", {"query": q, "time": t})})
json.dump(out, open("results.json", "w"))
print(len(out), sum(1 for o in out if o["resp"]["status"] != "success"))
