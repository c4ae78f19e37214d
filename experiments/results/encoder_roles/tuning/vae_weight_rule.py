# Tuning-seed rule for the VAE weight (BENCHMARKS §3, session 18, commit d2c4ec3).
import json, glob, numpy as np, sys
def load(pattern):
    out = []
    for f in glob.glob(pattern + "/*/results.json"):
        r = json.load(open(f))
        if r.get("finished") is False or r.get("aulc_log2") is None: continue
        ov = open(f.replace("results.json", ".hydra/overrides.yaml")).read()
        out.append((r, ov))
    return out
def setting(ov):
    if "mito_epfl_clustered" in ov: return "sections"
    if "mito_epfl_artifacts" in ov: return "scattered"
    return "clean"
H, V = {}, {}
for r, ov in load("/work/sweeps/t15_h"):
    if r["config"]["model"]["uncertainty"].get("topk_until") == 16: H[(setting(ov), r["seed"])] = r["aulc_log2"]
for r, ov in load("/work/sweeps/t18_vs_clean_sections"): V[(setting(ov), r["seed"])] = r["aulc_log2"]
for r, ov in load("/work/sweeps/t18_scattered"):
    (V if "encoder=vae" in ov else H)[(setting(ov), r["seed"])] = r["aulc_log2"]
rows = {}
alld = []
for s in ("clean", "sections", "scattered"):
    d = [(seed, V[(s, seed)] - H[(s, seed)]) for seed in range(100, 105) if (s, seed) in V and (s, seed) in H]
    rows[s] = d
    alld += [x for _, x in d]
    print(s, "n", len(d), "mean Δ %+.4f" % np.mean([x for _, x in d]) if d else "", [(a, round(b, 3)) for a, b in d])
print("pooled n", len(alld), "mean Δ %+.4f" % np.mean(alld) if alld else "")
ok = len(alld) == 15 and np.mean(alld) > 0 and all(np.mean([x for _, x in d]) >= -0.01 for d in rows.values())
print("RULE PASSES" if ok else "rule fails (or incomplete)")
json.dump({"pairs": {s: d for s, d in rows.items()}, "H": {f"{k[0]}/{k[1]}": v for k, v in H.items()}, "VAE": {f"{k[0]}/{k[1]}": v for k, v in V.items()}}, open("/work/notes/t18_rule.json", "w"), indent=1)
