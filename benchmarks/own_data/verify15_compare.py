"""verify15: calibrate() before and after, offline on saved verified pairs: copies19 (MNIST, procedural seeds
0 and 1) and the own-data pools (verify_pairs.py --out). Pair precision / recall of the groups.

    PYTHONPATH=$PWD python benchmarks/own_data/verify15_compare.py
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks/dedup_quality")]

from curator import copyverify as cv  # noqa: E402
from curator.dedup import find_duplicates  # noqa: E402


def own(stem, work) -> dict:
    """Pairs saved by verify_pairs.py in copies19's layout, with the generator's truth (origin of each row)."""
    z = np.load(stem + ".npz")
    uris = z["uris"].tolist()
    man = {}
    for line in open(Path(work) / "images/manifest.jsonl"):
        r = json.loads(line)
        man[str((Path(work) / "images" / r["file"]).resolve())] = r
    meta = [man[u] for u in uris]
    d = {"origin": np.array([m["of"] if m["role"] == "copy" else m["id"] for m in meta]),
         "i": z["i"], "j": z["j"], "s": z["s"], "chroma_pair": z["chroma"],
         "syn_scores": z["syn_scores"], "syn_chroma": z["syn_chroma"], "syn_positions": z["syn_pos"],
         "syn_kinds": z["syn_kinds"], "syn_grid": z["syn_grid"]}
    if "row_chroma" in z.files:
        d["row_chroma"] = z["row_chroma"]
    return d


def load_all(extra=()) -> dict:
    out = {}
    for f in ("mnist", "procedural", "procedural_seed1"):
        d = dict(np.load(ROOT / f"benchmarks/dedup_quality/copies19/{f}_pairs.npz", allow_pickle=True))
        d["chroma_pair"] = np.linalg.norm(d["chroma"][d["i"]] - d["chroma"][d["j"]], axis=-1)
        d["origin"] = np.asarray(d["origin"])
        out[f] = d
    for name, stem, work in extra:
        if Path(stem + ".npz").exists():
            out[name] = own(stem, work)
    return out


def pr(d, t, tol) -> tuple[float, float]:
    """Pair precision and recall of the groups of the pairs scoring >= t within the chroma tolerance."""
    n, o = len(d["origin"]), d["origin"]
    keep = (d["s"] >= t) & (d["chroma_pair"] <= tol)
    E = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)  # not searched: pairs given
    groups = find_duplicates(E, min(max(t, 1e-6), 1.0), pairs=(d["i"][keep], d["j"][keep]))
    truth = sum(c * (c - 1) // 2 for c in Counter(o.tolist()).values())
    pred = hit = 0
    for g in groups:
        pred += len(g) * (len(g) - 1) // 2
        hit += sum(c * (c - 1) // 2 for c in Counter(o[g].tolist()).values())
    return (hit / pred if pred else 1.0), hit / truth


def old_copyverify(commit="1f2bda9"):
    """curator/copyverify.py as it was at ``commit`` (before verify15), loaded as a module."""
    import importlib.util
    import subprocess
    import tempfile

    src = subprocess.run(["git", "show", f"{commit}:curator/copyverify.py"], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2]).stdout
    f = tempfile.NamedTemporaryFile("w", suffix=".py", delete=False)
    f.write(src)
    f.close()
    spec = importlib.util.spec_from_file_location("cv_old", f.name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def rowchroma(name, d):
    """Per-row chroma: copies19's saved one; own pools: saved with the pairs, else grey by the manifest mode."""
    if "chroma" in d and np.ndim(d["chroma"]) == 2:
        return d["chroma"]
    if "row_chroma" in d:
        return d["row_chroma"]
    stem, work = OWN[name]
    uris = np.load(stem + ".npz")["uris"].tolist()
    man = {}
    for line in open(Path(work) / "images/manifest.jsonl"):
        r = json.loads(line)
        man[str((Path(work) / "images" / r["file"]).resolve())] = r
    return np.array([[0.0, 0, 0] if man[u]["mode"] == "L" else [0.1, 0, -0.1] for u in uris])


OWN = {"own10k": ("/work/own10k/vp_base", "/work/own10k"), "own30k": ("/work/own30k/vp_base", "/work/own30k")}

if __name__ == "__main__":
    from types import SimpleNamespace

    data = load_all([(k, *v) for k, v in OWN.items()])
    old = old_copyverify()
    for label, mod, strat in (("before (1f2bda9)", old, False), ("pool copy share fix", cv, False),
                              ("+ grey pairs' own threshold", cv, True)):
        print("==", label)
        for name, d in data.items():
            syn = {k[4:]: v for k, v in d.items() if k.startswith("syn_")}
            syn["floor"] = 0.0
            cal = mod.calibrate(syn, len(d["origin"]), (d["i"], d["j"]), d["s"])
            t, g = cal["threshold"], None
            if strat:
                thr, g = cv.grey_thresholds(SimpleNamespace(chroma=rowchroma(name, d)), d["i"], d["j"], d["s"], syn, t)
                dd = dict(d)
                dd["s"] = np.where(d["s"] >= thr, 1.0, 0.0)
                P, R = pr(dd, 0.5, cal["chroma_tolerance"])
            else:
                P, R = pr(d, t, cal["chroma_tolerance"])
            print(f"{name:17s} t={t:.4f} P={P:.3f} R={R:.3f} pi={cal['pool_copy_share']:.3f} "
                  f"expected_false_rows={cal['expected_false_rows']} grey={g}", flush=True)
