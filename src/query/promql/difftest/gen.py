# Writes data.om (OpenMetrics) and meta.json in the current directory: counters with a
# gap and a reset, jittered gauges, one series ending early, classic histograms, info series.
import random, time, json
random.seed(42)
T0 = (int(time.time()) // 3600 - 5) * 3600  # 5h ago, hour aligned
STEP = 15
N = 4 * 3600 // STEP  # 4 hours
fams = {}
def add(name, labels, pts):
    fams.setdefault(name, []).append((labels, pts))
# counters
for job in ["api", "web"]:
    for inst in ["0", "1", "2"]:
        v = 0.0; pts = []
        for i in range(N):
            if job == "api" and inst == "1" and 300 <= i < 340:  # gap of 10 minutes
                continue
            if job == "web" and inst == "2" and i == 500:  # counter reset
                v = 0.0
            v += random.randint(0, 20)
            pts.append((T0 + i * STEP, v))
        add("req_total", {"job": job, "inst": inst}, pts)
# gauges, one ending early, jittered timestamps
for room in ["a", "b", "c"]:
    pts = []
    end = N if room != "c" else N - 240
    for i in range(end):
        jitter = random.choice([0, 0, 0, 1, 2, 3]) if room == "b" else 0
        pts.append((T0 + i * STEP + jitter, round(random.uniform(-10, 30), 3)))
    add("temp", {"room": room}, pts)
# histogram buckets
for svc in ["x", "y"]:
    counts = {"0.1": 0, "0.5": 0, "1": 0, "+Inf": 0}
    series = {le: [] for le in counts}
    for i in range(N):
        for _ in range(random.randint(0, 10)):
            obs = random.expovariate(2.0 if svc == "x" else 0.7)
            for le in counts:
                if le == "+Inf" or obs <= float(le):
                    counts[le] += 1
        for le in counts:
            series[le].append((T0 + i * STEP, float(counts[le])))
    for le, pts in series.items():
        add("lat_bucket", {"svc": svc, "le": le}, pts)
for job, team in [("api", "core"), ("web", "front")]:
    add("info", {"job": job, "team": team}, [(T0 + i * STEP, 1.0) for i in range(N)])
with open("data.om", "w") as f:
    for name, ss in fams.items():
        for labels, pts in ss:
            ls = ",".join(f'{k}="{v}"' for k, v in labels.items())
            for t, v in pts:
                f.write(f"{name}{{{ls}}} {v} {t}\n")
    f.write("# EOF\n")
json.dump({"t0": T0, "end": T0 + N * STEP}, open("meta.json", "w"))
print(T0)
# Label values with a newline: in 2.x `.` in a regex matcher does not match it.
with open("data.om", "r") as f:
    body = f.read()
assert body.endswith("# EOF\n")
with open("data.om", "w") as f:
    f.write(body[: -len("# EOF\n")])
    for i in range(N):
        f.write(f'nl{{v="a\\nb"}} 1 {T0 + i * STEP}\n')
        f.write(f'nl{{v="a-b"}} 2 {T0 + i * STEP}\n')
    f.write("# EOF\n")
